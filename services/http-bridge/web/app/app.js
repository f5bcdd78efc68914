// The media library (DESIGN §13): sign-in, the grid of the user's media kept live by
// Server-Sent Events (`/api/events`, DESIGN §10), resumable uploads (./uploads.js) and the
// detail view (./detail.js).

import { thumbHashToDataURL } from "/vendor/thumbhash.js";
import * as api from "./api.js";
import { openDetail } from "./detail.js";
import { announce } from "./ui.js";
import { startUploads } from "./uploads.js";

const $ = (id) => document.getElementById(id);
const cards = new Map(); // media id → { media, li }
let events = null;
let older = null; // the stream `events` replaces, open until `events` is
let lastEventId = null;
let registering = false;
let followedToken = null; // the access token the open event stream was opened with
let leaving = false;

// Leaving the page (reload, navigation) closes the event stream with an error event before
// `pagehide`; refreshing the token then would spend the refresh token in a page that never sees
// the answer, and the next page would present a used one (reuse: the session is revoked). So a
// stream error after `beforeunload` is ignored; a navigation that did not happen resets the flag.
addEventListener("beforeunload", () => {
  leaving = true;
  setTimeout(() => (leaving = false), 1000);
});
addEventListener("pageshow", () => (leaving = false));

// ---- sign-in ---------------------------------------------------------------------------------

$("auth-switch").addEventListener("click", () => {
  registering = !registering;
  $("auth-title").textContent = registering ? "Create an account" : "Sign in";
  $("auth-submit").textContent = registering ? "Create account" : "Sign in";
  $("auth-switch").textContent = registering ? "I have an account" : "Create an account";
  document.querySelector(".register-only").hidden = !registering;
  $("name").required = registering;
  $("password").autocomplete = registering ? "new-password" : "current-password";
});

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("auth-error").textContent = "";
  try {
    await api.signIn($("email").value.trim(), $("password").value, registering ? $("name").value.trim() : undefined);
    $("password").value = "";
  } catch (e) {
    $("auth-error").textContent = e.message;
  }
});

$("sign-out").addEventListener("click", () => api.signOut());

api.onSession((session) => {
  if (!session) showSignIn();
  else if ($("library").hidden) showLibrary();
  // A refreshed token: reopen the stream with it before the bridge ends the old one at its expiry.
  else if (events && session.accessToken !== followedToken) follow();
});

function showSignIn() {
  events?.close();
  events = null;
  older?.close();
  older = null;
  followedToken = null;
  cards.clear();
  $("grid").replaceChildren();
  $("library").hidden = true;
  $("who").hidden = true;
  $("auth").hidden = false;
  $("email").focus();
}

async function showLibrary() {
  const { user } = api.current();
  $("who-name").textContent = user?.name || user?.email || "";
  $("who").hidden = false;
  $("auth").hidden = true;
  $("library").hidden = false;
  await loadPage();
  follow();
}

// ---- the grid --------------------------------------------------------------------------------

async function loadPage() {
  const { user } = api.current();
  try {
    const page = await api.call("GET", `/api/users/${encodeURIComponent(user.id)}/media?limit=100`);
    for (const media of page.items.reverse()) upsert(media);
  } catch (e) {
    announce(`Could not load your media: ${e.message}`);
  }
  updateEmpty();
}

function updateEmpty() {
  $("empty").hidden = cards.size > 0;
}

/** Adds the media's card at the top, or updates it in place. */
function upsert(media) {
  let entry = cards.get(media.id);
  if (!entry) {
    const li = document.createElement("li");
    entry = { media, li };
    cards.set(media.id, entry);
    $("grid").prepend(li);
  }
  const before = entry.media;
  entry.media = media;
  render(entry, before);
  updateEmpty();
}

/** Removes the media's card. */
function drop(id) {
  cards.get(id)?.li.remove();
  cards.delete(id);
  updateEmpty();
}

function render(entry, before) {
  const { media, li } = entry;
  li.dataset.id = media.id;
  li.dataset.status = media.status;
  let button = li.querySelector("button.card");
  if (!button) {
    button = document.createElement("button");
    button.type = "button";
    button.className = "card";
    button.innerHTML = `<span class="thumb"><img alt=""></span><span class="name"></span><span class="status"></span>`;
    button.addEventListener("click", () => openDetail(entry.media, { changed: upsert, removed: drop }));
    li.append(button);
  }
  button.setAttribute("aria-label", `Open ${media.originalName} (${media.type.toLowerCase()}, ${media.status.toLowerCase()})`);
  const name = button.querySelector(".name");
  name.textContent = media.originalName;
  name.title = media.originalName; // the whole name, where the card cuts it off
  const status = button.querySelector(".status");
  status.textContent = media.status === "READY" ? media.type.toLowerCase() : media.status.toLowerCase();
  status.className = `status ${media.status.toLowerCase()}`;
  const thumb = button.querySelector(".thumb");
  const hash = media.details?.thumbhash;
  if (hash && !thumb.style.backgroundImage) {
    try {
      const bytes = Uint8Array.from(atob(hash), (c) => c.charCodeAt(0));
      thumb.style.backgroundImage = `url(${thumbHashToDataURL(bytes)})`;
    } catch {
      // A malformed placeholder only costs the placeholder.
    }
  }
  thumb.dataset.kind = media.type;
  const img = thumb.querySelector("img");
  img.alt = media.originalName;
  const hasThumb = media.variants?.some((v) => v.name === "thumb");
  const hadThumb = before?.variants?.some((v) => v.name === "thumb") && img.src;
  if (hasThumb && !hadThumb) loadThumb(media, img);
}

async function loadThumb(media, img) {
  try {
    const reply = await api.authFetch(`/api/media/${media.id}/content?variant=thumb`);
    if (!reply.ok) return;
    const url = URL.createObjectURL(await reply.blob());
    img.onload = () => img.classList.add("loaded");
    img.src = url;
  } catch {
    // The placeholder stays.
  }
}

// ---- live updates (Server-Sent Events) -------------------------------------------------------

/**
 * Opens the event stream with the current access token, resuming after the last event seen. An
 * open stream is closed only once the new one is open, so no event falls between the two
 * (duplicates are harmless: cards are upserted).
 */
function follow() {
  const session = api.current();
  if (!session) return;
  let url = `/api/events?token=${encodeURIComponent(session.accessToken)}`;
  if (lastEventId) url += `&lastEventId=${encodeURIComponent(lastEventId)}`;
  const previous = events;
  older?.close();
  older = previous;
  const source = new EventSource(url);
  events = source;
  followedToken = session.accessToken;
  if (previous) {
    source.addEventListener(
      "open",
      () => {
        previous.close();
        if (older === previous) older = null;
      },
      { once: true },
    );
  }
  const handle = (event) => {
    lastEventId = event.lastEventId || lastEventId;
    let media;
    try {
      media = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.type === "media.removed" || media.status === "DELETED") {
      drop(media.id);
    } else {
      upsert(media);
      if (event.type === "media.processed") announce(`${media.originalName} is ${media.status.toLowerCase()}`);
    }
  };
  for (const type of ["media.created", "media.updated", "media.removed", "media.processed"]) {
    source.addEventListener(type, handle);
  }
  source.onerror = async () => {
    // The browser retries by itself while the stream is only interrupted; a closed stream is a
    // refused token (expired, e.g. after the tab slept): refresh it and follow again from the
    // last event seen.
    if (source.readyState !== EventSource.CLOSED || events !== source || leaving) return;
    previous?.close();
    try {
      await api.token(true);
      if (events === source) follow(); // a refresh meanwhile has reopened it already otherwise
    } catch {
      // Signed out: onSession shows the sign-in form.
    }
  };
}

// ---- uploads ---------------------------------------------------------------------------------

const drop_zone = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop_zone.addEventListener(type, (event) => {
    event.preventDefault();
    drop_zone.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  drop_zone.addEventListener(type, () => drop_zone.classList.remove("over"));
}
drop_zone.addEventListener("drop", (event) => {
  event.preventDefault();
  startUploads([...event.dataTransfer.files], $("upload-public").checked);
});
$("file-input").addEventListener("change", (event) => {
  startUploads([...event.target.files], $("upload-public").checked);
  event.target.value = "";
});

// ---- start -----------------------------------------------------------------------------------

if (api.current()) showLibrary();
else showSignIn();
