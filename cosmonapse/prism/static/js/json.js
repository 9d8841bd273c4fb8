// A JSON value as a collapsible tree, built with DOM nodes only (never innerHTML).
import { el } from "./util.js";

const LONG = 4000;

function scalar(v) {
  if (v === null) return el("span", { class: "j-null" }, "null");
  switch (typeof v) {
    case "string": {
      const s = v.length > LONG ? JSON.stringify(v.slice(0, LONG)) + ` … (${v.length - LONG} more chars)` : JSON.stringify(v);
      return el("span", { class: "j-str" }, s);
    }
    case "number": return el("span", { class: "j-num" }, String(v));
    case "boolean": return el("span", { class: "j-bool" }, String(v));
    default: return el("span", {}, String(v));
  }
}

function node(key, v, depth) {
  const label = key === null ? null : el("span", { class: "j-key" }, JSON.stringify(String(key)) + ": ");
  if (v === null || typeof v !== "object") return el("div", {}, label, scalar(v));
  const isArr = Array.isArray(v);
  const entries = isArr ? v.map((x, i) => [i, x]) : Object.entries(v);
  if (!entries.length) return el("div", {}, label, isArr ? "[]" : "{}");
  const details = el("details", depth < 2 ? { open: true } : {});
  details.append(el("summary", {}, label, isArr ? `[${entries.length}]` : `{${entries.length}}`));
  const shown = entries.slice(0, 500);
  for (const [k, x] of shown) details.append(node(isArr ? null : k, x, depth + 1));
  if (entries.length > shown.length) details.append(el("div", { class: "faint" }, `… ${entries.length - shown.length} more`));
  return details;
}

export function jsonTree(value) {
  return el("div", { class: "json" }, node(null, value, 0));
}
