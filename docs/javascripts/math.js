// Renders the math of pymdownx.arithmatex (generic mode) with the bundled KaTeX (javascripts/katex/, version
// and licence there), so the pages show formulas without a network. Arithmatex wraps inline math as
// <span class="arithmatex">\(...\)</span> and display math as <div class="arithmatex">\[...\]</div>; only those
// elements are rendered, so a dollar sign or a backslash in ordinary text is left alone.
document$.subscribe(({ body }) => {
  for (const element of body.querySelectorAll(".arithmatex")) {
    const display = element.tagName === "DIV";
    const tex = element.textContent.trim().replace(/^\\[([]/, "").replace(/\\[)\]]$/, "");
    // throwOnError false: a formula KaTeX cannot parse is shown in red with its source instead of breaking the page
    katex.render(tex, element, { displayMode: display, throwOnError: false });
  }
});
