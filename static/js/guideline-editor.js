// Draft editor: live preview through the server's sanitizer (debounced).
(function () {
  "use strict";
  const form = document.getElementById("guideline-editor");
  if (!form) return;
  const body = document.getElementById("editor-body");
  const preview = document.getElementById("editor-preview");
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  let timer = null;

  async function refresh() {
    const data = new URLSearchParams({ body: body.value });
    const response = await fetch(form.dataset.previewUrl, {
      method: "POST", credentials: "same-origin", body: data,
      headers: { "X-CSRFToken": token },
    });
    if (response.ok) preview.innerHTML = (await response.json()).html;  // sanitized by nh3
  }

  body.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 250); });
  refresh();
})();
