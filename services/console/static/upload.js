// Upload: files from the picker or dropped on the form go to the public API as one ingest job
// (multipart, field "files"); the page then follows the job.
import { csrfToken, errorOf } from "./csrf.js";

const form = document.getElementById("upload-form");
if (form) {
  const input = document.getElementById("files");
  const list = document.getElementById("upload-list");
  const state = document.getElementById("upload-state");
  let dropped = [];

  const chosen = () => (dropped.length ? dropped : Array.from(input.files));
  const describe = () => { list.textContent = chosen().map((f) => f.name).join(", "); };

  input.addEventListener("change", () => { dropped = []; describe(); });
  form.addEventListener("dragover", (e) => { e.preventDefault(); form.classList.add("over"); });
  form.addEventListener("dragleave", () => form.classList.remove("over"));
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    form.classList.remove("over");
    dropped = Array.from(e.dataTransfer.files);
    describe();
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const files = chosen();
    if (!files.length) { state.textContent = "Choose or drop at least one file."; return; }
    const body = new FormData();
    for (const f of files) body.append("files", f, f.name);
    state.textContent = `Uploading ${files.length} file(s)…`;
    const collection = encodeURIComponent(form.dataset.collection);
    const response = await fetch(`/v1/collections/${collection}/documents`, {
      method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrfToken() }, body,
    });
    if (response.status !== 202) { state.textContent = `Refused: ${await errorOf(response)}`; return; }
    const job = await response.json();
    window.location.assign(`/console/jobs/${encodeURIComponent(job.job_id)}`);
  });
}
