// Render the math written with pymdownx.arithmatex (generic mode) using the bundled KaTeX (no network access).
function renderMath() {
  if (typeof renderMathInElement !== "function") { return; }
  renderMathInElement(document.body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true }
    ],
    throwOnError: false
  });
}
if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath);   // mkdocs-material instant navigation
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}
