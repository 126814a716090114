// Formatting shared by the views; no DOM, so the unit tests run it in Node.

/** Bytes as people read them: `512 B`, `1.5 KiB`, `293 KiB`, `9.0 MiB`. */
export function humanSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do { v /= 1024; u++; } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/**
 * `name (conflict 2026-11-30 101500).ext` — how volebarn-sync names a conflict copy
 * (`conflict_copy_name` in volebarn-core) — gives the original's name (`name.ext`); any other
 * name gives null.
 */
export function conflictOriginal(name) {
  const m = /^(.*) \(conflict \d{4}-\d{2}-\d{2} \d{6}\)(\.[^.]*)?$/.exec(name);
  return m ? m[1] + (m[2] || '') : null;
}
