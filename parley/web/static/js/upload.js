// File uploads (multipart) with progress: a chat attachment (POST /v1/files) or a batch of
// knowledge documents. XMLHttpRequest, because fetch cannot report upload progress.

import { ApiError, authHeaders, url } from "./api.js";

export function upload(file, options = {}) {
  return uploadFiles("v1/files", [file], options);
}

// Every file as a part named "file" (the batch-ingest route takes many, and zip/tar archives).
export function uploadFiles(path, files, { onProgress = () => {} } = {}) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", url(path));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        onProgress(1);
        resolve(body);
        return;
      }
      const retryAfter = Number.parseInt(xhr.getResponseHeader("Retry-After") ?? "", 10);
      reject(new ApiError(
        xhr.status,
        body?.error?.code ?? `http_${xhr.status}`,
        body?.error?.message ?? (xhr.status === 404 ? "This server does not accept uploads." : `The upload failed (HTTP ${xhr.status}).`),
        { retryAfter: Number.isFinite(retryAfter) ? retryAfter : null },
      ));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload was interrupted: the server cannot be reached.")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was cancelled.")));
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
