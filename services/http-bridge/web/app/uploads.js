// Resumable uploads through the bridge's tus endpoint (`/api/uploads`, DESIGN §11) with
// tus-js-client (served from npm at /vendor/tus.js): per-file progress, pause, resume, cancel.
// A page reload can continue an unfinished upload of the same file (tus-js-client keeps its URL
// in localStorage).

import * as api from "./api.js";
import { announce } from "./ui.js";

/** Bytes per PATCH request: two of the media service's default 5 MiB parts. */
const CHUNK = 10 * 1024 * 1024;

/** Starts one tus upload per file, each with its row in the upload list. */
export function startUploads(files, isPublic) {
  for (const file of files) startOne(file, isPublic);
}

function startOne(file, isPublic) {
  const li = document.createElement("li");
  li.className = "upload";
  li.innerHTML = `
    <span class="name"></span>
    <progress max="100" value="0"></progress>
    <span class="percent">0%</span>
    <button type="button" class="pause">Pause</button>
    <button type="button" class="cancel">Cancel</button>
    <span class="error" role="alert"></span>`;
  li.querySelector(".name").textContent = file.name;
  const progress = li.querySelector("progress");
  progress.setAttribute("aria-label", `Upload of ${file.name}`);
  const percent = li.querySelector(".percent");
  const pause = li.querySelector(".pause");
  const cancel = li.querySelector(".cancel");
  document.getElementById("uploads").append(li);

  let paused = false;
  const upload = new window.tus.Upload(file, {
    endpoint: "/api/uploads",
    chunkSize: CHUNK,
    retryDelays: [0, 1000, 3000, 5000],
    metadata: { filename: file.name, isPublic: String(isPublic) },
    removeFingerprintOnSuccess: true,
    async onBeforeRequest(req) {
      req.setHeader("Authorization", `Bearer ${await api.token()}`);
    },
    onShouldRetry(err, attempt, options) {
      const status = err.originalResponse?.getStatus();
      if (status === 401) {
        // An expired access token: refresh it; the retry sends the new one.
        return api.token(true).then(() => true, () => false);
      }
      return status === undefined || status === 409 || status === 423 || status >= 500;
    },
    onProgress(sent, total) {
      const value = total ? Math.floor((sent / total) * 100) : 0;
      progress.value = value;
      percent.textContent = `${value}%`;
    },
    onSuccess() {
      percent.textContent = "done";
      pause.remove();
      cancel.remove();
      announce(`${file.name} uploaded; processing`);
      setTimeout(() => li.remove(), 1500);
    },
    onError(err) {
      const body = err.originalResponse?.getBody();
      let message = err.message;
      try {
        message = JSON.parse(body).message || message;
      } catch {
        // Not the error object: keep tus-js-client's message.
      }
      li.querySelector(".error").textContent = message;
      pause.textContent = "Retry";
      paused = true;
    },
  });

  pause.addEventListener("click", () => {
    if (paused) {
      li.querySelector(".error").textContent = "";
      upload.start();
      pause.textContent = "Pause";
    } else {
      upload.abort();
      pause.textContent = "Resume";
    }
    paused = !paused;
  });
  cancel.addEventListener("click", async () => {
    // abort(true) also terminates the upload on the server (tus termination).
    await upload.abort(true).catch(() => {});
    li.remove();
    announce(`Upload of ${file.name} cancelled`);
  });

  upload.findPreviousUploads().then((previous) => {
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });
}
