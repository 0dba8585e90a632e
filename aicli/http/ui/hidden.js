// Characters a person cannot see, made visible where a person decides: <U+202E>.
//
// Why: an approval can lie. Claude proposed `echo hi <U+202E><U+2066>; touch PWNED<U+2069> # x`;
// drawn, the override and the isolates made `touch PWNED` read as part of a comment, and
// Allow ran it. So every string of a tool's input (keys too) and of a question is drawn with
// each hidden character as a marked <U+XXXX>, under a warning, never stripped: what is
// allowed is exactly what was shown, made visible. The data itself is not changed.
//
// Hidden: the general categories Cc (but \t and \n), Cf (bidi controls, zero-width
// characters, BOM, soft hyphen, tag characters...), Zl, Zp, Cs (a lone surrogate), Co
// (private use) and Cn (unassigned), and every Default_Ignorable_Code_Point (Hangul fillers,
// variation selectors, the combining grapheme joiner...). The same set as the terminal
// client's, aicli/console/hidden.py, which explains it. Not hidden: other spaces and
// letters that look alike, which are seen, if misread.
//
// Reversible: a "<" that would begin what reads as a marker is itself shown as <U+003C>.

const HIDDEN = /(?![\t\n])[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}\p{Default_Ignorable_Code_Point}]/u;
// What may need changing: a "<" in a marker's shape, and anything not printable ASCII.
const CANDIDATE = /<(?=[Uu]\+[0-9A-Fa-f]{4,6}>)|[^\t\n -~]/gu;

function needsMarker(char) { return char === "<" || HIDDEN.test(char); }

function marker(char) {
  return `<U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}>`;
}

// `text` split into [string, isMarker] runs. Hidden characters side by side make one run
// (one node to draw, not thousands, for an input of nothing else).
function runs(text) {
  const parts = [];
  let from = 0;
  for (const found of text.matchAll(CANDIDATE)) {
    if (!needsMarker(found[0])) continue;
    if (found.index > from) parts.push([text.slice(from, found.index), false]);
    const last = parts[parts.length - 1];
    if (last && last[1] && found.index === from) last[0] += marker(found[0]);
    else parts.push([marker(found[0]), true]);
    from = found.index + found[0].length;
  }
  if (from < text.length) parts.push([text.slice(from), false]);
  return parts;
}

// As text, for where no markup goes (an alert): the same markers, unstyled.
export function visibleText(value) {
  return runs(String(value ?? "")).map(([part]) => part).join("");
}

// As nodes to append: text, and each run of markers a span.hidden-char (styled apart, so it
// cannot be taken for typed text), titled with the code points it stands for.
export function shown(value) {
  return runs(String(value ?? "")).map(([part, isMarker]) => {
    if (!isMarker) return document.createTextNode(part);
    const span = document.createElement("span");
    span.className = "hidden-char";
    span.title = `not typed as shown: ${part.slice(1, -1).split("><").join(" ")}`;
    span.textContent = part;
    return span;
  });
}

// The distinct hidden characters (as U+XXXX, by code point) in every string of JSON values,
// keys too.
export function hiddenIn(...values) {
  const found = new Set();
  const visit = (value) => {
    if (typeof value === "string") {
      for (const [part, isMarker] of runs(value)) {
        if (!isMarker) continue;
        for (const [one] of part.matchAll(/U\+[0-9A-F]+/g)) if (one !== "U+003C") found.add(one);
      }
    } else if (Array.isArray(value)) {
      value.forEach(visit);
    } else if (value !== null && typeof value === "object") {
      for (const [key, item] of Object.entries(value)) { visit(key); visit(item); }
    }
  };
  values.forEach(visit);
  return [...found].sort((a, b) => parseInt(a.slice(2), 16) - parseInt(b.slice(2), 16));
}

// The warning above what holds hidden characters, or null when nothing does.
export function hiddenWarning(...values) {
  const found = hiddenIn(...values);
  if (!found.length) return null;
  const note = document.createElement("p");
  note.className = "hidden-warning";
  note.setAttribute("role", "alert");
  const more = found.length > 8 ? ` and ${found.length - 8} more` : "";
  note.textContent = "Warning: the input contains hidden or direction-changing characters, "
    + `shown as <U+XXXX>; they stay in what is allowed (${found.slice(0, 8).join(", ")}${more}).`;
  return note;
}
