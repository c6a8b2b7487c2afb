// A small Markdown renderer for model replies: fenced code, headings, lists, quotes,
// paragraphs, and inline code, bold, italic and http(s) links. It builds DOM nodes and never
// parses HTML, so whatever a model writes shows as text: nothing it says can run. An unclosed
// fence (a reply still streaming) renders as code up to the end.
"use strict";

(function () {
  const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;

  function el(tag, ...children) {
    const node = document.createElement(tag);
    for (const child of children) node.append(child);
    return node;
  }

  function inline(text) {
    const out = document.createDocumentFragment();
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      out.append(text.slice(last, m.index));
      if (m[1] !== undefined) out.append(el("code", m[1]));
      else if (m[2] !== undefined) out.append(el("strong", ...inline(m[2]).childNodes));
      else if (m[3] !== undefined || m[4] !== undefined) out.append(el("em", m[3] ?? m[4]));
      else {
        const a = el("a", m[5]);
        a.href = m[6];
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        out.append(a);
      }
      last = m.index + m[0].length;
    }
    out.append(text.slice(last));
    return out;
  }

  // Lines joined with <br>: a chat reply's line breaks are meant.
  function withBreaks(lines) {
    const out = document.createDocumentFragment();
    lines.forEach((line, i) => {
      if (i) out.append(el("br"));
      out.append(inline(line));
    });
    return out;
  }

  const FENCE = /^\s*(```|~~~)\s*([\w+-]*)/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*\d+[.)]\s+(.*)$/;  // parseInt of the line reads its number
  const QUOTE = /^\s*>\s?(.*)$/;

  function render(text) {
    const root = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(FENCE);
      if (fence) {
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
        i++; // the closing fence
        const code = el("code", body.join("\n"));
        if (fence[2]) code.className = "language-" + fence[2];
        root.append(el("pre", code));
        continue;
      }
      if (!line.trim()) { i++; continue; }
      const heading = line.match(HEADING);
      if (heading) {
        root.append(el("h" + Math.min(6, heading[1].length + 2), inline(heading[2])));
        i++;
        continue;
      }
      const list = BULLET.test(line) ? [BULLET, "ul"] : NUMBERED.test(line) ? [NUMBERED, "ol"] : null;
      if (list) {
        const node = el(list[1]);
        // A numbered item after a blank line starts a new list: keep its number.
        if (list[1] === "ol") node.start = parseInt(line, 10);
        while (i < lines.length && list[0].test(lines[i])) {
          node.append(el("li", inline(lines[i].match(list[0])[1])));
          i++;
        }
        root.append(node);
        continue;
      }
      if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].match(QUOTE)[1]);
        root.append(el("blockquote", render(quoted.join("\n"))));
        continue;
      }
      const paragraph = [];
      while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
             && !BULLET.test(lines[i]) && !NUMBERED.test(lines[i]) && !QUOTE.test(lines[i])) {
        paragraph.push(lines[i++]);
      }
      root.append(el("p", withBreaks(paragraph)));
    }
    return root;
  }

  window.renderMarkdown = render;
})();
