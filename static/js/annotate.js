// Annotator workspace: rank by keyboard or drag, submit through the API with an
// idempotency key, and swap in the pre-loaded next item so nobody waits.
(function () {
  "use strict";

  const root = document.getElementById("workspace");
  if (!root) return;
  const slot = document.getElementById("item-slot");
  const prefetched = document.getElementById("prefetched");
  let state = null;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------ item state

  function bind(article) {
    if (!article) { state = null; return; }
    if (article.dataset.task === "demonstration") { bindDemonstration(article); return; }
    state = {
      article: article,
      assignment: Number(article.dataset.assignment),
      mode: article.dataset.mode,
      allowTies: article.dataset.allowTies === "1",
      topK: article.dataset.topK ? Number(article.dataset.topK) : null,
      count: Number(article.dataset.count),
      key: newKey(),            // one key per item: a retry sends the same one
      started: Date.now(),
      placed: [],               // [{id, label, tie}] best first
      tieNext: false,
      pairwise: null,           // {tiers, strength, allBad}
      sending: false,
    };
    const reveal = article.querySelector(".content-warning .reveal");
    if (reveal) reveal.addEventListener("click", revealAnswers);
    article.querySelectorAll(".answer .collapsible").forEach(collapseLong);
    article.querySelector(".submit").addEventListener("click", submit);
    article.querySelector(".skip-open").addEventListener("click", openSkip);
    article.querySelector(".skip-confirm").addEventListener("click", skip);
    article.querySelectorAll(".pairwise-choices button").forEach((button) => {
      button.addEventListener("click", () => choosePair(button.dataset.choice, Number(button.dataset.strength || 0)));
    });
    article.querySelectorAll(".answer").forEach((card) => {
      card.addEventListener("click", (event) => {
        if (state.mode !== "pairwise" && !event.target.closest("a, button")) pick(card.dataset.label);
      });
    });
    article.querySelectorAll(".board .tie-toggle").forEach((toggle) => {
      toggle.addEventListener("click", () => toggleTie(toggle.closest(".chip").dataset.label));
    });
    const board = article.querySelector(".board");
    if (board && window.Sortable) {
      window.Sortable.create(board, { animation: 120, onEnd: dragged });
    }
    render();
  }

  function revealAnswers() {
    state.article.querySelector(".answers").hidden = false;
    state.article.querySelector(".content-warning").hidden = true;
  }

  function collapseLong(content) {
    if (content.scrollHeight > 420) {
      content.classList.add("collapsed");
      const expand = content.parentElement.querySelector(".expand");
      expand.hidden = false;
      expand.addEventListener("click", () => {
        content.classList.toggle("collapsed");
        expand.textContent = content.classList.contains("collapsed") ? "Show all" : "Show less";
      });
    }
  }

  // ------------------------------------------------------------------ ranking

  function chip(label) {
    return state.article.querySelector('.chip[data-label="' + label + '"]');
  }

  function pick(label) {
    if (!chip(label) || state.placed.some((p) => p.label === label)) return;
    const tie = state.tieNext && state.placed.length > 0 && state.allowTies;
    state.placed.push({ id: Number(chip(label).dataset.id), label: label, tie: tie });
    state.tieNext = false;
    render();
  }

  function toggleTie(label) {
    const index = state.placed.findIndex((p) => p.label === label);
    if (index > 0 && state.allowTies) {
      state.placed[index].tie = !state.placed[index].tie;
      render();
    }
  }

  function undo() {
    if (state.tieNext) { state.tieNext = false; } else { state.placed.pop(); }
    render();
  }

  function dragged() {
    // A drag sets the whole order: every chip counts as placed, ties kept by label.
    const ties = new Set(state.placed.filter((p) => p.tie).map((p) => p.label));
    state.placed = Array.from(state.article.querySelectorAll(".board .chip")).map((el, i) => ({
      id: Number(el.dataset.id), label: el.dataset.label, tie: i > 0 && ties.has(el.dataset.label),
    }));
    render();
  }

  function rankingTiers() {
    const tiers = [];
    state.placed.forEach((p) => {
      if (p.tie && tiers.length) tiers[tiers.length - 1].push(p.id); else tiers.push([p.id]);
    });
    const rest = Array.from(state.article.querySelectorAll(".board .chip"))
      .map((el) => Number(el.dataset.id))
      .filter((id) => !state.placed.some((p) => p.id === id));
    if (rest.length) tiers.push(rest);
    return tiers;
  }

  function complete() {
    if (state.mode === "pairwise") return state.pairwise !== null;
    const left = state.count - state.placed.length;
    if (left <= 1) return true;  // the last one ranks itself
    return state.topK !== null && state.placed.length >= state.topK;
  }

  function choosePair(choice, strength) {
    const cards = state.article.querySelectorAll(".answer");
    const a = Number(cards[0].dataset.id), b = Number(cards[1].dataset.id);
    if (choice === "A") state.pairwise = { tiers: [[a], [b]], strength: strength, allBad: false };
    else if (choice === "B") state.pairwise = { tiers: [[b], [a]], strength: strength, allBad: false };
    else state.pairwise = { tiers: [[a, b]], strength: null, allBad: choice === "bad" };
    state.article.querySelectorAll(".pairwise-choices button").forEach((button) => {
      button.classList.toggle("chosen", button.dataset.choice === choice &&
        Number(button.dataset.strength || 0) === strength);
    });
    const summary = choice === "tie" ? "Tie: equally good" : choice === "bad" ? "Both bad" :
      choice + " is better (strength " + strength + " of 4)";
    state.article.querySelector(".choice-summary").textContent = summary;
    render();
  }

  function render() {
    if (!state) return;
    const board = state.article.querySelector(".board");
    if (board) {
      const placedLabels = state.placed.map((p) => p.label);
      placedLabels.forEach((label) => board.appendChild(chip(label)));
      board.querySelectorAll(".chip").forEach((el) => {
        if (!placedLabels.includes(el.dataset.label)) board.appendChild(el);
      });
      board.querySelectorAll(".chip").forEach((el) => {
        const entry = state.placed.find((p) => p.label === el.dataset.label);
        el.classList.toggle("placed", Boolean(entry));
        el.classList.toggle("tied", Boolean(entry && entry.tie));
      });
      let rank = 0;
      state.placed.forEach((p) => {
        if (!p.tie) rank += 1;
        const badge = state.article.querySelector('.answer[data-label="' + p.label + '"] .rank-badge');
        if (badge) badge.textContent = "#" + rank + (p.tie ? " (tie)" : "");
      });
      state.article.querySelectorAll(".answer").forEach((card) => {
        if (!state.placed.some((p) => p.label === card.dataset.label)) {
          card.querySelector(".rank-badge").textContent = "";
        }
      });
      board.classList.toggle("tie-next", state.tieNext);
    }
    state.article.querySelector(".submit").disabled = !complete() || state.sending;
  }

  // ------------------------------------------------------------------ server

  function payload() {
    const flags = (name) => {
      const box = state.article.querySelector('input[name="' + name + '"]');
      return Boolean(box && box.checked);
    };
    const body = {
      unsafe: flags("unsafe"), needs_expert: flags("needs_expert"),
      rationale: state.article.querySelector('textarea[name="rationale"]').value,
      duration_ms: Date.now() - state.started,
    };
    if (state.mode === "pairwise") {
      body.tiers = state.pairwise.tiers;
      body.strength = state.pairwise.strength;
      body.all_bad = state.pairwise.allBad;
    } else {
      body.tiers = rankingTiers();
      body.all_bad = flags("all_bad");
    }
    return body;
  }

  async function post(url, body, extraHeaders) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: Object.assign({ "Content-Type": "application/json", "X-CSRFToken": csrfToken() }, extraHeaders || {}),
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* empty body */ }
    return { ok: response.ok, status: response.status, data: data };
  }

  function showError(message) {
    state.article.querySelector(".submit-error").textContent = message;
  }

  async function submit() {
    if (!state || !complete() || state.sending) return;
    await sendWork("ranking", payload(), render, "ranking", "Enter");
  }

  // Sends a ranking or a demonstration with this item's idempotency key; on success (or
  // a 409 that ends the item) moves on, otherwise keeps the work on screen.
  async function sendWork(endpoint, body, redraw, what, retryKeys) {
    state.sending = true;
    redraw();
    let result;
    try {
      result = await post(root.dataset.apiRoot + "assignments/" + state.assignment + "/" + endpoint,
        body, { "Idempotency-Key": state.key });
    } catch (error) {
      state.sending = false;
      redraw();
      showError("Could not reach the server; your " + what + " is kept here. Press " + retryKeys + " to retry.");
      return;
    }
    if (result.ok || (result.status === 409 && result.data.code !== "idempotency_key_reused")) {
      if (result.ok) { bump("done-today", 1); bump("done-total", 1); bump("left", -1); }
      notice(result.ok ? "" : result.data.detail);
      advance();
      return;
    }
    state.sending = false;
    redraw();
    showError(result.data.detail || describe(result.data) || "The " + what + " was not accepted.");
  }

  function describe(errors) {
    return Object.entries(errors || {}).map(([field, messages]) => field + ": " + [].concat(messages).join(" ")).join("; ");
  }

  function openSkip() {
    const panel = state.article.querySelector(".skip-panel");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) panel.querySelector("select").focus();
  }

  async function skip() {
    const reason = state.article.querySelector('select[name="skip_reason"]').value;
    const result = await post(root.dataset.apiRoot + "assignments/" + state.assignment + "/skip", { reason: reason });
    if (result.ok || result.status === 409) { bump("left", -1); advance(); }
    else showError(result.data.detail || "Could not skip.");
  }

  function notice(message) {
    const el = document.getElementById("notice");
    if (el) el.textContent = message || "";
  }

  function bump(id, delta) {
    const el = document.getElementById(id);
    if (el) el.textContent = String(Math.max(0, Number(el.textContent) + delta));
  }

  function advance() {
    const next = prefetched.querySelector(".item");
    if (next) {
      slot.replaceChildren(next);
      prefetched.replaceChildren();
      bind(next);
      loadNext();
      window.scrollTo(0, 0);
    } else {
      window.location.reload();  // claims the next item or shows "nothing left"
    }
  }

  async function loadNext() {
    if (!state) return;
    try {
      const response = await fetch(root.dataset.prefetchUrl, { credentials: "same-origin" });
      if (response.status === 200) {
        const holder = document.createElement("div");
        holder.innerHTML = await response.text();  // server-rendered, sanitized HTML
        prefetched.replaceChildren(...holder.children);
      }
    } catch (error) { /* the reload fallback still works */ }
  }

  // ------------------------------------------------------------------ demonstrations

  function bindDemonstration(article) {
    const editor = article.querySelector(".demonstration-text");
    const source = article.querySelector(".source-text");
    state = {
      article: article, task: "demonstration", assignment: Number(article.dataset.assignment),
      key: newKey(), started: Date.now(), sending: false, rewrite: false,
      sourceText: source ? source.value : null,
    };
    article.querySelectorAll(".answer .collapsible").forEach(collapseLong);
    editor.addEventListener("input", renderDemonstration);
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submitDemonstration();
      }
    });
    const start = article.querySelector(".start-from-source");
    if (start) {
      start.addEventListener("click", () => {
        if (editor.value.trim() && !window.confirm("Replace what you wrote with the answer above?")) return;
        editor.value = state.sourceText;
        state.rewrite = true;
        renderDemonstration();
        editor.focus();
      });
    }
    article.querySelector(".tab-write").addEventListener("click", () => showPreview(false));
    article.querySelector(".tab-preview").addEventListener("click", () => showPreview(true));
    article.querySelector(".submit").addEventListener("click", submitDemonstration);
    article.querySelector(".skip-open").addEventListener("click", openSkip);
    article.querySelector(".skip-confirm").addEventListener("click", skip);
    renderDemonstration();
  }

  function renderDemonstration() {
    const text = state.article.querySelector(".demonstration-text").value;
    state.article.querySelector(".char-count").textContent = String(text.length);
    const note = state.article.querySelector(".edit-note");
    if (note) note.textContent = state.rewrite ? "rewriting the answer above" : "written from scratch";
    state.article.querySelector(".submit").disabled = !text.trim() || state.sending;
  }

  async function showPreview(on) {
    const editor = state.article.querySelector(".demonstration-text");
    const preview = state.article.querySelector(".demonstration-preview");
    state.article.querySelector(".tab-write").classList.toggle("chosen", !on);
    state.article.querySelector(".tab-preview").classList.toggle("chosen", on);
    editor.hidden = on;
    preview.hidden = !on;
    if (!on) { editor.focus(); return; }
    preview.textContent = "Rendering…";
    const body = new URLSearchParams({ text: editor.value });
    const response = await fetch(state.article.dataset.previewUrl, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "X-CSRFToken": csrfToken() },
    });
    // The server renders markdown to sanitized HTML (the same filter as every answer).
    if (response.ok) preview.innerHTML = await response.text();
    else preview.textContent = "The preview is not available right now.";
  }

  async function submitDemonstration() {
    const text = state.article.querySelector(".demonstration-text").value;
    if (!text.trim() || state.sending) return;
    await sendWork("demonstration",
      { text: text, rewrite: state.rewrite, duration_ms: Date.now() - state.started },
      renderDemonstration, "answer", "Ctrl+Enter");
  }

  // ------------------------------------------------------------------ keyboard

  document.addEventListener("keydown", (event) => {
    if (!state || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const key = event.key;
    if (state.task === "demonstration") {
      if (key === "s" || key === "S") { event.preventDefault(); openSkip(); }
      return;
    }
    if (key === "Enter") { event.preventDefault(); submit(); return; }
    if (key === "s" || key === "S") { event.preventDefault(); openSkip(); return; }
    if (state.mode === "pairwise") {
      if (/^[1-8]$/.test(key)) {
        const n = Number(key);
        choosePair(n <= 4 ? "A" : "B", n <= 4 ? 5 - n : n - 4);
      } else if (key === "t" || key === "T") choosePair("tie", 0);
      else if (key === "x" || key === "X") choosePair("bad", 0);
      return;
    }
    if (key === "Backspace") { event.preventDefault(); undo(); return; }
    if (key === "=") { state.tieNext = state.allowTies && state.placed.length > 0; render(); return; }
    if (/^[a-zA-Z]$/.test(key)) pick(key.toUpperCase());
  });

  setInterval(() => {
    const timer = document.getElementById("timer");
    if (!state || !timer) return;
    const seconds = Math.floor((Date.now() - state.started) / 1000);
    timer.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
  }, 1000);

  bind(slot.querySelector(".item"));
  loadNext();
})();
