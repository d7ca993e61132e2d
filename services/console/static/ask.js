// Ask: POST /v1/query with stream: true (the public API, as the session), read its server-sent
// events, show each verified sentence as it comes, then link every sentence to its sources.
import { csrfToken, errorOf } from "./csrf.js";

const form = document.getElementById("ask-form");
const answer = document.getElementById("answer");
const sources = document.getElementById("sources");
const flags = document.getElementById("flags");
const state = document.getElementById("ask-state");
const rate = document.getElementById("rate");
const rateState = document.getElementById("rate-state");

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function showSources(list) {
  sources.replaceChildren();
  for (const s of list) {
    const li = el("li", { id: `src-${s.n}`, value: String(s.n), class: "source" });
    li.append(el("strong", {}, s.title || s.doc_id), " ", el("code", {}, s.doc_id));
    li.append(el("p", {}, s.text));
    sources.append(li);
  }
}

function link(span, numbers, on) {
  span.classList.toggle("linked", on);
  for (const n of numbers) document.getElementById(`src-${n}`)?.classList.toggle("linked", on);
}

function showSentences(done) {
  answer.replaceChildren();
  const list = done.answer_sentences || [];
  if (!list.length) answer.append(el("p", {}, done.answer));
  for (const s of list) {
    const span = el("span", { class: "sentence" + (s.supported ? "" : " unsupported") }, s.text);
    if (s.evidence) span.title = `Source says: ${s.evidence}`;
    for (const n of s.citations) {
      span.append(el("a", { class: "cite", href: `#src-${n}`, "aria-label": `source ${n}` }, `[${n}]`));
    }
    span.addEventListener("mouseenter", () => link(span, s.citations, true));
    span.addEventListener("mouseleave", () => link(span, s.citations, false));
    span.addEventListener("focusin", () => link(span, s.citations, true));
    span.addEventListener("focusout", () => link(span, s.citations, false));
    answer.append(span, " ");
  }
}

function flag(name, value, bad) {
  flags.append(el("dt", {}, name), el("dd", bad ? { class: "flag-bad" } : {}, value));
}

function showFlags(done) {
  flags.replaceChildren();
  const safety = done.safety || {};
  flag("answered by", done.answered_by, false);
  flag("answerable", String(done.answerable), !done.answerable);
  flag("degraded", done.degraded.length ? done.degraded.join(", ") : "no", done.degraded.length > 0);
  flag("grounded", String(safety.grounded), safety.grounded === false);
  flag("supported share", String(safety.supported_share), safety.supported_share < 1);
  flag("injection suspected", safety.injection?.length ? safety.injection.join(", ") : "no", safety.injection?.length > 0);
  flag("redacted", safety.redacted?.length ? safety.redacted.join(", ") : "nothing", false);
  flag("removed sentences", String(safety.removed_sentences ?? 0), false);
  flag("cached", String(done.cached), false);
  flag("variant", done.variant || "-", false);
  flags.hidden = false;
}

// Feedback on the answer shown: POST /v1/feedback (the public API, as the session).
async function sendRating(rating) {
  const response = await fetch("/v1/feedback", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
    body: JSON.stringify({ answer_id: rate.dataset.answerId, rating }),
  });
  rateState.textContent = response.ok ? `Thanks: recorded as ${rating}.` : `Not recorded: ${await errorOf(response)}`;
}

for (const button of rate.querySelectorAll("button")) {
  button.addEventListener("click", () => {
    sendRating(button.dataset.rating).catch((err) => { rateState.textContent = `Failed: ${err}`; });
  });
}

function handle(event, data) {
  if (event === "sources") showSources(data.sources);
  else if (event === "token") answer.append(document.createTextNode(data.text));
  else if (event === "done") {
    showSentences(data);
    showFlags(data);
    rate.dataset.answerId = data.answer_id;
    rateState.textContent = "";
    rate.hidden = !data.answer_id;
    state.textContent = "Answer complete.";
    answer.dataset.done = "true";
  }
}

async function ask(body) {
  answer.replaceChildren();
  delete answer.dataset.done;
  sources.replaceChildren();
  flags.hidden = true;
  rate.hidden = true;
  state.textContent = "Asking…";
  const response = await fetch("/v1/query", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrfToken(), accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    state.textContent = `Refused: ${await errorOf(response)}`;
    return;
  }
  const degraded = response.headers.get("x-quarry-degraded");
  if (degraded) state.textContent = `Answering without: ${degraded}`;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) handle(event, JSON.parse(data.join("\n")));
    }
  }
  if (!answer.dataset.done) state.textContent = "The answer stream was cut.";
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const fields = new FormData(form);
  const body = { question: fields.get("question"), collection: fields.get("collection"), stream: true };
  if (fields.get("answer_mode")) body.answer_mode = fields.get("answer_mode");
  ask(body).catch((err) => { state.textContent = `Failed: ${err}`; });
});
