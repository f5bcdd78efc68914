// The detail view of one media: the right player for its type (image preview, HLS video through
// hls.js, audio, PDF thumbnail), its details, and edit / make public / copy link / delete.
//
// Private bytes reach <video>, <audio> and links through a short-lived signed content URL
// (`GET /api/media/{id}/content-url`), since those elements cannot send an Authorization header;
// HLS playlists carry that URL's token on to their segments.

import * as api from "./api.js";
import { announce, humanDuration, humanSize } from "./ui.js";

const $ = (id) => document.getElementById(id);
const dialog = $("detail");
let shown = null; // { media, callbacks, hls, objectUrls }

dialog.addEventListener("close", () => {
  shown?.hls?.destroy();
  for (const url of shown?.objectUrls ?? []) URL.revokeObjectURL(url);
  $("viewer").replaceChildren();
  shown = null;
});

/**
 * Opens the dialog for `media`; `callbacks.changed(media)` after an edit, `callbacks.removed(id)`
 * after a delete.
 */
export async function openDetail(media, callbacks) {
  if (dialog.open) dialog.close();
  shown = { media, callbacks, hls: null, objectUrls: [] };
  const current = shown;
  $("detail-title").textContent = media.originalName;
  fillFacts(media);
  fillForm(media);
  $("viewer").replaceChildren();
  dialog.showModal();
  try {
    const ticket = await api.call("GET", `/api/media/${media.id}/content-url`);
    if (shown !== current) return;
    $("download").href = ticket.url;
    $("download").setAttribute("download", media.originalName);
    await showViewer(media, ticket, current);
  } catch (e) {
    $("viewer").textContent = `Cannot show this media: ${e.message}`;
  }
}

function has(media, name) {
  return media.variants?.some((v) => v.name === name);
}

async function showViewer(media, ticket, current) {
  const viewer = $("viewer");
  const token = new URL(ticket.url, location.href).searchParams.get("token") || ticket.token;
  if (media.type === "IMAGE" || (media.type === "DOCUMENT" && has(media, "thumb"))) {
    const img = document.createElement("img");
    img.id = "preview";
    img.alt = media.originalName;
    const variant = media.type === "IMAGE" ? (has(media, "preview") ? "preview" : null) : "thumb";
    const reply = await api.authFetch(`/api/media/${media.id}/content${variant ? `?variant=${variant}` : ""}`);
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const url = URL.createObjectURL(await reply.blob());
    current.objectUrls.push(url);
    img.src = url;
    viewer.append(img);
  } else if (media.type === "VIDEO") {
    const video = document.createElement("video");
    video.id = "player";
    video.controls = true;
    video.playsInline = true;
    video.muted = true;
    video.setAttribute("aria-label", media.originalName);
    viewer.append(video);
    if (has(media, "hls")) {
      const master = `/api/media/${media.id}/hls/master.m3u8?token=${encodeURIComponent(token)}`;
      const { default: Hls } = await import("/vendor/hls.mjs");
      if (Hls.isSupported()) {
        const hls = new Hls();
        current.hls = hls;
        hls.loadSource(master);
        hls.attachMedia(video);
      } else {
        video.src = master; // Safari plays HLS natively.
      }
    } else {
      video.src = ticket.url; // Not transcoded (yet): the original.
    }
  } else if (media.type === "AUDIO") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = ticket.url;
    audio.setAttribute("aria-label", media.originalName);
    viewer.append(audio);
  } else {
    const p = document.createElement("p");
    p.textContent = "No preview for this file: use Download.";
    viewer.append(p);
  }
}

function fillFacts(media) {
  const d = media.details || {};
  const facts = [
    ["Type", `${media.type.toLowerCase()} (${media.mimeType})`],
    ["Size", humanSize(media.size)],
    ["Status", media.status.toLowerCase() + (media.failureReason ? `: ${media.failureReason}` : "")],
  ];
  if (d.width && d.height) {
    // A PDF's page size is in points (fractional); pictures are in pixels.
    const dimensions =
      media.type === "DOCUMENT" ? `${Math.round(d.width)} × ${Math.round(d.height)} pt` : `${d.width} × ${d.height}`;
    facts.push(["Dimensions", dimensions]);
  }
  if (d.durationMs) facts.push(["Duration", humanDuration(d.durationMs)]);
  if (d.pageCount) facts.push(["Pages", String(d.pageCount)]);
  if (d.videoCodec || d.audioCodec) facts.push(["Codecs", [d.videoCodec, d.audioCodec].filter(Boolean).join(", ")]);
  facts.push(["Visibility", media.isPublic ? "public" : "private"]);
  facts.push(["Uploaded", new Date(media.createdAt).toLocaleString()]);
  $("facts").replaceChildren(
    ...facts.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

function fillForm(media) {
  $("edit-name").value = media.originalName;
  $("edit-metadata").value = media.metadata ? JSON.stringify(media.metadata, null, 2) : "";
  $("edit-public").checked = media.isPublic;
  $("edit-error").textContent = "";
  $("edit-note").textContent = "";
}

$("edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!shown) return;
  const { media, callbacks } = shown;
  $("edit-error").textContent = "";
  $("edit-note").textContent = "";
  let metadata = null;
  const text = $("edit-metadata").value.trim();
  if (text) {
    try {
      metadata = JSON.parse(text);
    } catch {
      $("edit-error").textContent = "Metadata must be JSON, e.g. {\"chapter\": 1}.";
      return;
    }
  }
  try {
    const updated = await api.call("PATCH", `/api/media/${media.id}`, {
      originalName: $("edit-name").value.trim(),
      metadata,
      isPublic: $("edit-public").checked,
    });
    shown.media = updated;
    callbacks.changed(updated);
    $("detail-title").textContent = updated.originalName;
    fillFacts(updated);
    announce(`Saved ${updated.originalName}`);
  } catch (e) {
    $("edit-error").textContent = e.message;
  }
});

$("copy-link").addEventListener("click", async () => {
  if (!shown) return;
  const { media } = shown;
  $("edit-error").textContent = "";
  $("edit-note").textContent = "";
  try {
    let link;
    let note;
    if (media.isPublic) {
      link = new URL(media.url, location.href).href;
      note = "Link copied";
    } else {
      const ticket = await api.call("GET", `/api/media/${media.id}/content-url`);
      link = new URL(ticket.url, location.href).href;
      note = "Private link copied: it works for a few minutes";
    }
    await navigator.clipboard.writeText(link);
    announce(note);
    $("edit-note").textContent = note; // a success: not in the (red, alerting) error line
  } catch (e) {
    $("edit-error").textContent = `Could not copy the link: ${e.message}`;
  }
});

$("delete").addEventListener("click", async () => {
  if (!shown) return;
  const { media, callbacks } = shown;
  if (!confirm(`Delete ${media.originalName}?`)) return;
  try {
    await api.call("DELETE", `/api/media/${media.id}`);
    callbacks.removed(media.id);
    dialog.close();
    announce(`Deleted ${media.originalName}`);
  } catch (e) {
    $("edit-error").textContent = e.message;
  }
});
