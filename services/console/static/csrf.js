// The session's CSRF token, from the page: sent as a header on every change made from script.
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// The API's error message from a failed response, or its status when the body says nothing.
export async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.message} (${body.error.code})` : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}
