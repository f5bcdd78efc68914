// Small page helpers shared by the modules.

/** Tells screen-reader users what just happened, through the polite live region. */
export function announce(text) {
  document.getElementById("announce").textContent = text;
}

/** Bytes in binary units: `812 B`, `4.0 KiB`, `1.3 GiB`. */
export function humanSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Milliseconds as `m:ss` (or `h:mm:ss`). */
export function humanDuration(ms) {
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
