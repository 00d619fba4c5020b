// Annotator workspace: rank by keyboard or drag, submit through the API with an
// idempotency key, and swap in the pre-loaded next item so nobody waits.
// Controls are found by ids scoped to their item ("a<assignment>-submit"), never by class:
// answer text is HTML on the same page and must not be able to stand in for a control.
// Candidate ids are the opaque strings the server showed (labeling/blind.py).
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

  function el(name) {  // a control of the current item, by its scoped id
    return document.getElementById(state.article.id + "-" + name);
  }

  function cards() {  // the answer cards: the answers section's own children only
    const answers = el("answers");
    return answers ? Array.from(answers.children).filter((c) => c.id.startsWith(state.article.id + "-answer-")) : [];
  }

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
      labels: Array.from(article.dataset.labels || ""),
      key: newKey(),            // one key per item: a retry sends the same one
      started: Date.now(),
      placed: [],               // [{id, label, tie}] best first
      tieNext: false,
      pairwise: null,           // {tiers, strength, allBad}
      sending: false,
    };
    const reveal = el("reveal");
    if (reveal) reveal.addEventListener("click", revealAnswers);
    state.labels.forEach(collapseLong);
    el("submit").addEventListener("click", submit);
    el("skip-open").addEventListener("click", openSkip);
    el("skip-confirm").addEventListener("click", skip);
    pairButtons().forEach((button) => {
      button.addEventListener("click", () => choosePair(button.dataset.choice, Number(button.dataset.strength || 0)));
    });
    cards().forEach((card) => {
      card.addEventListener("click", (event) => {
        if (state.mode !== "pairwise" && !event.target.closest("a, button")) pick(card.dataset.label);
      });
    });
    state.labels.forEach((label) => {
      const toggle = chip(label) && chip(label).firstElementChild;
      if (toggle) toggle.addEventListener("click", () => toggleTie(label));
    });
    const board = el("board");
    if (board && window.Sortable) {
      window.Sortable.create(board, { animation: 120, onEnd: dragged });
    }
    render();
  }

  function pairButtons() {
    const group = el("pairwise");
    return group ? Array.from(group.children) : [];
  }

  function revealAnswers() {
    el("answers").hidden = false;
    el("warning").hidden = true;
  }

  function collapseLong(label) {
    const content = el("content-" + label);
    const expand = el("expand-" + label);
    if (content && expand && content.scrollHeight > 420) {
      content.classList.add("collapsed");
      expand.hidden = false;
      expand.addEventListener("click", () => {
        content.classList.toggle("collapsed");
        expand.textContent = content.classList.contains("collapsed") ? "Show all" : "Show less";
      });
    }
  }

  // ------------------------------------------------------------------ ranking

  function chip(label) {
    return state.labels.includes(label) ? el("chip-" + label) : null;
  }

  function chips() {  // in the board's current order
    const board = el("board");
    return board ? Array.from(board.children).filter((c) => c.id.startsWith(state.article.id + "-chip-")) : [];
  }

  function pick(label) {
    if (!chip(label) || state.placed.some((p) => p.label === label)) return;
    const tie = state.tieNext && state.placed.length > 0 && state.allowTies;
    state.placed.push({ id: chip(label).dataset.id, label: label, tie: tie });
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
    state.placed = chips().map((c, i) => ({
      id: c.dataset.id, label: c.dataset.label, tie: i > 0 && ties.has(c.dataset.label),
    }));
    render();
  }

  function rankingTiers() {
    const tiers = [];
    state.placed.forEach((p) => {
      if (p.tie && tiers.length) tiers[tiers.length - 1].push(p.id); else tiers.push([p.id]);
    });
    const rest = chips()
      .map((c) => c.dataset.id)
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
    const a = chipOrCard("A").dataset.id, b = chipOrCard("B").dataset.id;
    if (choice === "A") state.pairwise = { tiers: [[a], [b]], strength: strength, allBad: false };
    else if (choice === "B") state.pairwise = { tiers: [[b], [a]], strength: strength, allBad: false };
    else state.pairwise = { tiers: [[a, b]], strength: null, allBad: choice === "bad" };
    pairButtons().forEach((button) => {
      button.classList.toggle("chosen", button.dataset.choice === choice &&
        Number(button.dataset.strength || 0) === strength);
    });
    const summary = choice === "tie" ? "Tie: equally good" : choice === "bad" ? "Both bad" :
      choice + " is better (strength " + strength + " of 4)";
    el("choice").textContent = summary;
    render();
  }

  function chipOrCard(label) {
    return chip(label) || el("answer-" + label);
  }

  function render() {
    if (!state) return;
    const board = el("board");
    if (board) {
      const placedLabels = state.placed.map((p) => p.label);
      placedLabels.forEach((label) => board.appendChild(chip(label)));
      chips().forEach((c) => {
        if (!placedLabels.includes(c.dataset.label)) board.appendChild(c);
      });
      chips().forEach((c) => {
        const entry = state.placed.find((p) => p.label === c.dataset.label);
        c.classList.toggle("placed", Boolean(entry));
        c.classList.toggle("tied", Boolean(entry && entry.tie));
      });
      let rank = 0;
      const badges = {};
      state.placed.forEach((p) => {
        if (!p.tie) rank += 1;
        badges[p.label] = "#" + rank + (p.tie ? " (tie)" : "");
      });
      state.labels.forEach((label) => {
        const badge = el("badge-" + label);
        if (badge) badge.textContent = badges[label] || "";
      });
      board.classList.toggle("tie-next", state.tieNext);
    }
    el("submit").disabled = !complete() || state.sending;
  }

  // ------------------------------------------------------------------ server

  function payload() {
    const flags = (name) => {
      const box = el(name);
      return Boolean(box && box.checked);
    };
    const body = {
      unsafe: flags("unsafe"), needs_expert: flags("needs_expert"),
      rationale: el("rationale").value,
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
    el("error").textContent = message;
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
    if (stopIfPaused(result)) return;
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
    const panel = el("skip-panel");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) el("skip-reason").focus();
  }

  async function skip() {
    const reason = el("skip-reason").value;
    const result = await post(root.dataset.apiRoot + "assignments/" + state.assignment + "/skip", { reason: reason });
    if (stopIfPaused(result)) return;
    if (result.ok || result.status === 409) { bump("left", -1); advance(); }
    else showError(result.data.detail || "Could not skip.");
  }

  // An admin paused this annotator: the pre-loaded item is dropped (its lease was given
  // back) and the page reloads into the paused page, which says why.
  function stopIfPaused(result) {
    if (result.status !== 409 || result.data.code !== "paused") return false;
    prefetched.replaceChildren();
    window.location.reload();
    return true;
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
    const next = prefetched.firstElementChild;
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
      if (response.status === 409) prefetched.replaceChildren();  // paused: nothing behind
      if (response.status === 200) {
        const holder = document.createElement("div");
        holder.innerHTML = await response.text();  // server-rendered, sanitized HTML
        const item = holder.firstElementChild;  // the one <article> the server sent
        if (item && item.tagName === "ARTICLE") prefetched.replaceChildren(item);
      }
    } catch (error) { /* the reload fallback still works */ }
  }

  // ------------------------------------------------------------------ demonstrations

  function bindDemonstration(article) {
    state = {
      article: article, task: "demonstration", assignment: Number(article.dataset.assignment),
      key: newKey(), started: Date.now(), sending: false, rewrite: false, labels: ["A"],
    };
    const editor = el("editor");
    const source = el("source");
    state.sourceText = source ? source.value : null;
    collapseLong("A");
    editor.addEventListener("input", renderDemonstration);
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submitDemonstration();
      }
    });
    const start = el("start-from-source");
    if (start) {
      start.addEventListener("click", () => {
        if (editor.value.trim() && !window.confirm("Replace what you wrote with the answer above?")) return;
        editor.value = state.sourceText;
        state.rewrite = true;
        renderDemonstration();
        editor.focus();
      });
    }
    el("tab-write").addEventListener("click", () => showPreview(false));
    el("tab-preview").addEventListener("click", () => showPreview(true));
    el("submit").addEventListener("click", submitDemonstration);
    el("skip-open").addEventListener("click", openSkip);
    el("skip-confirm").addEventListener("click", skip);
    renderDemonstration();
  }

  function renderDemonstration() {
    const text = el("editor").value;
    el("char-count").textContent = String(text.length);
    const note = el("edit-note");
    if (note) note.textContent = state.rewrite ? "rewriting the answer above" : "written from scratch";
    el("submit").disabled = !text.trim() || state.sending;
  }

  async function showPreview(on) {
    const editor = el("editor");
    const preview = el("preview");
    el("tab-write").classList.toggle("chosen", !on);
    el("tab-preview").classList.toggle("chosen", on);
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
    else if (response.status === 413) preview.textContent = await response.text();
    else preview.textContent = "The preview is not available right now.";
  }

  async function submitDemonstration() {
    const text = el("editor").value;
    if (!text.trim() || state.sending) return;
    await sendWork("demonstration",
      { text: text, rewrite: state.rewrite, duration_ms: Date.now() - state.started },
      renderDemonstration, "answer", "Ctrl+Enter");
  }

  // ------------------------------------------------------------------ keyboard

  // Shortcuts apply only when focus is on the board: the page itself, the item, an answer
  // or a chip. A focused control (link, button, field) keeps its own keys: Enter on
  // "My feedback" follows it, Enter on "Skip this item" skips.
  const CONTROLS = "a[href], button, input, select, textarea, summary, [contenteditable]";

  document.addEventListener("keydown", (event) => {
    if (!state || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && target.closest && target.closest(CONTROLS)) {
      if (event.key === "Escape" && target.matches("input, select, textarea")) target.blur();
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

  bind(slot.firstElementChild && slot.firstElementChild.tagName === "ARTICLE" ? slot.firstElementChild : null);
  loadNext();
})();
