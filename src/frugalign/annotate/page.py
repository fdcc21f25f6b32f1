"""The annotator's page: one pair at a time, answered with a click or the keys 1 (A), 2 (B), 3 (tie).
Model outputs are set with textContent, never parsed as HTML. Its Content-Security-Policy lets run
only this inline script and style (by their hashes), and lets the page fetch only its own server."""

import base64
import hashlib

STYLE = """
  body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .text { white-space: pre-wrap; border: 1px solid #ccc; border-radius: 6px; padding: .8rem; min-height: 4rem; }
  #prompt { background: #f5f5f5; margin-bottom: 1rem; }
  button { font-size: 1rem; padding: .5rem 1.2rem; margin-right: .5rem; }
  #status { color: #555; margin: .8rem 0; }
  .hidden { display: none; }
"""

SCRIPT = """
"use strict";
let token = sessionStorage.getItem("frugalign-token") || "";
let current = null;
let sending = false;
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: Object.assign({"Authorization": "Bearer " + token}, body ? {"Content-Type": "application/json"} : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (response.status === 401) { signOut("That token is not valid."); throw new Error("unauthorised"); }
  if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
  return response.json();
}

function signOut(message) {
  sessionStorage.removeItem("frugalign-token");
  token = "";
  $("work").classList.add("hidden");
  $("signin").classList.remove("hidden");
  if (message) alert(message);
}

async function next() {
  const data = await api("/api/next");
  const progress = data.progress;
  if (!data.pair) {
    current = null;
    $("status").textContent = "Nothing left to label: thank you. Labelled by you: " + progress.labelled_by_you + ".";
    for (const id of ["prompt", "a", "b"]) $(id).textContent = "";
    return;
  }
  current = data.pair;
  $("status").textContent = "Labelled by you: " + progress.labelled_by_you + " · waiting: " + progress.pairs_waiting;
  $("prompt").textContent = current.prompt;  // text, never HTML: model outputs can hold anything
  $("a").textContent = current.a;
  $("b").textContent = current.b;
  $("comment").value = "";
}

async function choose(choice) {
  if (!current || sending) return;
  sending = true;
  try {
    await api("/api/label", {pair_id: current.pair_id, choice: choice, comment: $("comment").value});
    await next();
  } catch (e) {
    $("status").textContent = "Not saved: " + e.message;
  } finally {
    sending = false;
  }
}

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("frugalign-token", token);
  $("signin").classList.add("hidden");
  $("work").classList.remove("hidden");
  await next();
});
for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT") return;
  const choice = {"1": "A", "2": "B", "3": "tie"}[event.key];
  if (choice) choose(choice);
});
if (token) { $("signin").classList.add("hidden"); $("work").classList.remove("hidden"); next(); }
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>frugalign · annotate</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Which response is better?</h1>
<form id="signin">
  <label>Your token <input id="token" type="password" autocomplete="off" size="40"></label>
  <button type="submit" id="signin-button">Sign in</button>
</form>
<div id="work" class="hidden">
  <div id="status"></div>
  <div id="prompt" class="text"></div>
  <div class="pair">
    <div><h3>A</h3><div id="a" class="text"></div></div>
    <div><h3>B</h3><div id="b" class="text"></div></div>
  </div>
  <p><label>Comment (optional) <input id="comment" size="60" maxlength="2000"></label></p>
  <p>
    <button id="choose-A" data-choice="A">A is better (1)</button>
    <button id="choose-B" data-choice="B">B is better (2)</button>
    <button id="choose-tie" data-choice="tie">Tie (3)</button>
  </p>
</div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _source(text: str) -> str:
    """A CSP source that allows an inline element whose whole text is `text`."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


POLICY = (f"default-src 'none'; script-src {_source(SCRIPT)}; style-src {_source(STYLE)}; connect-src 'self'; "
          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
