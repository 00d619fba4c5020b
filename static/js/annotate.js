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
      sending: false,
      revise: article.dataset.revise === "1",  // Go back: a sent item ranked again
      multi: article.dataset.axes === "1",     // a project with axes: one panel per axis
      axes: [],                 // one entry per axis (and the safety bin); see axisOf
      cur: null,                // the axis on screen: what the keys label
      refused: false,           // a submit was refused for a missing axis
    };
    state.axes = state.multi ? axisTabs().map((tab) => axisOf(tab)) : [axisOf(null)];
    state.cur = state.axes[0];
    const reveal = el("reveal");
    if (reveal) reveal.addEventListener("click", revealAnswers);
    keyboardScroll(article);
    state.labels.forEach(collapseLong);
    el("submit").addEventListener("click", submit);
    if (el("skip-open")) {
      el("skip-open").addEventListener("click", openSkip);
      el("skip-confirm").addEventListener("click", skip);
    }
    if (el("revise-cancel")) el("revise-cancel").addEventListener("click", () => { announce("Kept what you sent."); restoreParked(); });
    cards().forEach((card) => {
      card.addEventListener("click", (event) => {
        if (!event.target.closest("a, button")) cardChosen(card.dataset.label);
      });
      card.addEventListener("keydown", (event) => {  // Space on a focused answer places it (Enter submits)
        if (event.target !== card || event.key !== " ") return;
        if (cardChosen(card.dataset.label)) {
          event.preventDefault();
          event.stopPropagation();
        }
      });
      if (sideBySide()) card.addEventListener("scroll", () => syncScroll(card), { passive: true });
    });
    state.axes.forEach(bindAxis);
    axisTabs().forEach((tab, index) => {
      tab.addEventListener("click", () => showAxis(index, false));
      tab.addEventListener("keydown", (event) => {  // the tab list's arrow keys (ARIA tabs)
        const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
        if (!step) return;
        event.preventDefault();
        showAxis(index + step, true);
      });
    });
    if (state.revise) placeSent();
    render();
  }

  // One axis's labels. The one-axis workspace has one, without a panel, whose controls
  // have the ids they always had; with axes, each axis's controls are "<item>-axis-<key>-…"
  // and the safety bin's "<item>-safety-…".
  function axisOf(tab) {
    const panel = tab ? document.getElementById(tab.getAttribute("aria-controls")) : null;
    const kind = panel ? panel.dataset.kind : "ranking";
    return {
      key: panel ? panel.dataset.axis : null,
      name: panel ? panel.dataset.name : "",
      kind: kind,               // ranking, rating or safety
      primary: !panel || panel.dataset.primary === "1",
      prefix: !panel ? "" : kind === "safety" ? "safety-" : "axis-" + panel.dataset.axis + "-",
      tab: tab,
      panel: panel,
      placed: [],               // ranking: [{id, label, tie}] best first
      tieNext: false,
      pairwise: null,           // ranking in pairwise mode: {choice, tiers, strength, allBad}
      scores: {},               // rating: {shown id: 0..4}; safety: {shown id: safe?}
      cursor: 0,                // rating and safety: the highlighted answer's index
    };
  }

  function axisTabs() {
    const tabs = el("axis-tabs");
    return tabs ? Array.from(tabs.children).filter((t) => t.getAttribute("role") === "tab") : [];
  }

  function bindAxis(a) {
    pairButtons(a).forEach((button) => {
      button.addEventListener("click", () => choosePair(button.dataset.choice, Number(button.dataset.strength || 0)));
    });
    chips(a).forEach((c) => {
      c.addEventListener("keydown", (event) => {
        if (event.target !== c) return;
        if (event.key === " ") {
          event.preventDefault();
          event.stopPropagation();
          pick(c.dataset.label);
        }
      });
    });
    state.labels.forEach((label) => {
      const toggle = chip(label, a) && chip(label, a).firstElementChild;
      if (toggle) toggle.addEventListener("click", () => toggleTie(label));
    });
    const board = el(a.prefix + "board");
    if (board && window.Sortable) {
      window.Sortable.create(board, { animation: 120, onEnd: dragged });
    }
    // Rating and safety radios: a click (or arrow keys inside a group) labels too.
    state.labels.forEach((label, index) => {
      const values = a.kind === "rating" ? [0, 1, 2, 3, 4] : a.kind === "safety" ? [true, false] : [];
      values.forEach((value) => {
        const radio = el(a.prefix + radioName(a, label, value));
        if (radio) radio.addEventListener("change", () => {
          a.cursor = index;
          a.scores[idOf(label)] = value;
          render();
        });
      });
    });
    safetyBins(a).forEach((button) => button.addEventListener("click", () => chooseBin(button)));
  }

  function radioName(a, label, value) {
    return a.kind === "rating" ? "rate-" + label + "-" + value : label + (value ? "-safe" : "-unsafe");
  }

  // Go back: what they sent, placed again (in the ids this item shows).
  function placeSent() {
    const data = el("initial");
    if (!data) return;
    const sent = JSON.parse(data.textContent);
    const byId = {};
    state.labels.forEach((label) => { byId[idOf(label)] = label; });
    if (!state.multi) {
      if (state.mode === "pairwise") return;
      placeTiers(state.cur, sent, byId);
      return;
    }
    state.axes.forEach((a) => {
      if (a.kind === "safety") { Object.assign(a.scores, sent.safety || {}); return; }
      const entry = (sent.axes || {})[a.key];
      if (!entry) return;
      if (a.kind === "rating") Object.assign(a.scores, entry.scores);
      else if (isPair(a)) setPair(a, sentChoice(a, entry.tiers, sent, byId), a.primary ? sent.strength || 0 : 0);
      else placeTiers(a, entry.tiers, byId);
    });
  }

  function placeTiers(a, tiers, byId) {
    tiers.forEach((tier) => tier.forEach((id, index) => {
      if (byId[id]) a.placed.push({ id: id, label: byId[id], tie: index > 0 });
    }));
  }

  function sentChoice(a, tiers, sent, byId) {
    if (tiers.length === 1) return a.primary && sent.all_bad ? "bad" : "tie";
    return byId[tiers[0][0]];
  }

  function pairButtons(a) {
    const group = el((a || state.cur).prefix + "pairwise");
    return group ? Array.from(group.children) : [];
  }

  function safetyBins(a) {
    const group = a.kind === "safety" ? el("safety-bins") : null;
    return group ? Array.from(group.children) : [];
  }

  function isPair(a) {  // a ranking axis shown as the pairwise choice
    return a.kind === "ranking" && state.mode === "pairwise";
  }

  function idOf(label) {  // the opaque id of the answer shown as `label`
    return el("answer-" + label).dataset.id;
  }
  // A code block wider than its answer scrolls sideways: it takes the focus, so the
  // keyboard can scroll it too.
  function keyboardScroll(article) {
    Array.from(article.getElementsByTagName("pre")).forEach((pre) => {
      if (pre.scrollWidth > pre.clientWidth) {
        pre.tabIndex = 0;
      }
    });
  }

  function revealAnswers() {
    el("answers").hidden = false;
    el("warning").hidden = true;
    keyboardScroll(state.article);
  }

  function sideBySide() {
    const answers = el("answers");
    return Boolean(answers && answers.classList.contains("side-by-side") &&
      window.matchMedia("(min-width: 1100px)").matches);
  }

  // Side by side, each answer scrolls in its own column and the others follow it (the
  // same fraction of their length), so the same part of every answer is in view.
  let syncing = false;
  function syncScroll(source) {
    if (syncing) return;
    syncing = true;
    const range = source.scrollHeight - source.clientHeight;
    const fraction = range > 0 ? source.scrollTop / range : 0;
    cards().forEach((card) => {
      if (card !== source && !card.classList.contains("expanded")) {
        card.scrollTop = fraction * (card.scrollHeight - card.clientHeight);
      }
    });
    window.requestAnimationFrame(() => { syncing = false; });
  }

  function collapseLong(label) {
    const content = el("content-" + label);
    const expand = el("expand-" + label);
    if (!content || !expand) return;
    if (sideBySide() && state.labels.length > 1) {
      // Columns scroll; "Expand" gives one answer the whole width and length.
      const card = el("answer-" + label);
      if (card.scrollHeight <= card.clientHeight + 4) return;  // short: nothing to expand
      expand.hidden = false;
      expand.textContent = "Expand";
      expand.addEventListener("click", () => {
        const on = card.classList.toggle("expanded");
        expand.textContent = on ? "Back to columns" : "Expand";
        expand.setAttribute("aria-expanded", String(on));
      });
      return;
    }
    if (content.scrollHeight > 420) {
      content.classList.add("collapsed");
      expand.hidden = false;
      expand.addEventListener("click", () => {
        const collapsed = content.classList.toggle("collapsed");
        expand.textContent = collapsed ? "Show all" : "Show less";
        expand.setAttribute("aria-expanded", String(!collapsed));
      });
    }
  }

  // ------------------------------------------------------------------ ranking

  function chip(label, a) {
    return state.labels.includes(label) ? el((a || state.cur).prefix + "chip-" + label) : null;
  }

  function chips(a) {  // in the board's current order
    const prefix = (a || state.cur).prefix;
    const board = el(prefix + "board");
    return board ? Array.from(board.children).filter((c) => c.id.startsWith(state.article.id + "-" + prefix + "chip-")) : [];
  }

  // An answer clicked (or Space on it): placed next on a ranking board, highlighted on a
  // rating or safety panel. False when that means nothing here (the pairwise choice).
  function cardChosen(label) {
    const a = state.cur;
    if (a.kind === "ranking") {
      if (isPair(a)) return false;
      pick(label);
      return true;
    }
    if (safetyBins(a).length) return false;
    moveCursor(label);
    return true;
  }

  function pick(label) {
    const a = state.cur;
    if (!chip(label) || a.placed.some((p) => p.label === label)) return;
    const tie = a.tieNext && a.placed.length > 0 && state.allowTies;
    a.placed.push({ id: chip(label).dataset.id, label: label, tie: tie });
    a.tieNext = false;
    render();
    announce("Answer " + label + " placed " + placeOf(label) + (tie ? ", tied with the one before" : "") +
      (complete() ? ". Ranking complete: " + nextStep() : "."));
  }

  // What to do once the axis on screen is done: submit, or the next axis to label.
  function nextStep() {
    const missing = state.axes.find((a) => !complete(a));
    if (!state.multi || !missing) return "press Enter to submit.";
    return "press ] for the next axis (" + missing.name + " is still to do).";
  }

  function placeOf(label, a) {  // "1st", "2nd"... of a placed answer, ties sharing a place
    let rank = 0;
    let found = "";
    (a || state.cur).placed.forEach((p) => {
      if (!p.tie) rank += 1;
      if (p.label === label) found = ordinal(rank);
    });
    return found;
  }

  function ordinal(n) {
    const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
    return n + suffix;
  }

  function announce(message) {
    const region = document.getElementById("announce");
    if (region) region.textContent = message;
  }

  function toggleTie(label) {
    const a = state.cur;
    const index = a.placed.findIndex((p) => p.label === label);
    if (index > 0 && state.allowTies) {
      a.placed[index].tie = !a.placed[index].tie;
      render();
    }
  }

  function undo() {
    const a = state.cur;
    let removed = null;
    if (a.tieNext) { a.tieNext = false; } else { removed = a.placed.pop(); }
    render();
    announce(removed ? "Answer " + removed.label + " taken back." : "Tie cancelled.");
  }

  function dragged() {
    // A drag sets the whole order: every chip counts as placed, ties kept by label.
    const a = state.cur;
    const ties = new Set(a.placed.filter((p) => p.tie).map((p) => p.label));
    a.placed = chips(a).map((c, i) => ({
      id: c.dataset.id, label: c.dataset.label, tie: i > 0 && ties.has(c.dataset.label),
    }));
    render();
  }

  function rankingTiers(a) {
    a = a || state.cur;
    const tiers = [];
    a.placed.forEach((p) => {
      if (p.tie && tiers.length) tiers[tiers.length - 1].push(p.id); else tiers.push([p.id]);
    });
    const rest = chips(a)
      .map((c) => c.dataset.id)
      .filter((id) => !a.placed.some((p) => p.id === id));
    if (rest.length) tiers.push(rest);
    return tiers;
  }

  function complete(a) {
    a = a || state.cur;
    if (a.kind === "rating" || a.kind === "safety") return state.labels.every((label) => idOf(label) in a.scores);
    if (isPair(a)) return a.pairwise !== null;
    const left = state.count - a.placed.length;
    if (left <= 1) return true;  // the last one ranks itself
    return state.topK !== null && a.placed.length >= state.topK;
  }

  function choosePair(choice, strength) {
    const a = state.cur;
    setPair(a, choice, strength);
    render();
    if (state.multi) announce(a.name + ": " + pairSummary(a) + ". " + nextStep());
  }

  // The primary axis's choice carries the ranking's strength (1..4); the other axes' say
  // only which answer is better (the API stores one strength per ranking).
  function setPair(a, choice, strength) {
    const first = chipOrCard("A").dataset.id, second = chipOrCard("B").dataset.id;
    const kept = a.primary ? strength : null;
    if (choice === "A") a.pairwise = { choice: choice, tiers: [[first], [second]], strength: kept, allBad: false };
    else if (choice === "B") a.pairwise = { choice: choice, tiers: [[second], [first]], strength: kept, allBad: false };
    else a.pairwise = { choice: choice, tiers: [[first, second]], strength: null, allBad: choice === "bad" };
  }

  function pairSummary(a) {
    const p = a.pairwise;
    if (p.choice === "tie") return "Tie: equally good";
    if (p.choice === "bad") return "Both bad";
    return p.choice + " is better" + (p.strength ? " (strength " + p.strength + " of 4)" : "");
  }

  function chipOrCard(label) {
    return chip(label) || el("answer-" + label);
  }

  // ------------------------------------------------------------------ ratings and safety

  function moveCursor(label) {
    const a = state.cur;
    const index = state.labels.indexOf(label);
    if (index < 0) return;
    a.cursor = index;
    render();
    announce("Answer " + label + (a.kind === "rating" ? ": type 0 to 4." : ": type Y (safe) or N (unsafe)."));
  }

  // The highlighted answer gets `value` (a score, or safe?) and the next one without a
  // label is highlighted, so "3 4 2" rates A, B and C.
  function labelCurrent(value) {
    const a = state.cur;
    const label = state.labels[a.cursor];
    a.scores[idOf(label)] = value;
    const n = state.labels.length;
    for (let step = 1; step <= n; step += 1) {
      const next = (a.cursor + step) % n;
      if (!(idOf(state.labels[next]) in a.scores)) { a.cursor = next; break; }
    }
    render();
    const said = a.kind === "rating" ? "rated " + value + ": " + anchorOf(a, value) : value ? "safe" : "unsafe";
    announce("Answer " + label + " " + said + ". " +
      (complete(a) ? "Every answer done: " + nextStep() : "Now answer " + state.labels[a.cursor] + "."));
  }

  function clearCurrent() {
    const a = state.cur;
    const label = state.labels[a.cursor];
    delete a.scores[idOf(label)];
    render();
    announce("Answer " + label + " cleared.");
  }

  function anchorOf(a, score) {
    const radio = el(a.prefix + "rate-" + state.labels[0] + "-" + score);
    return radio ? radio.parentElement.title : "";
  }

  function chooseBin(button) {
    const a = state.cur;
    a.scores = {};
    a.scores[idOf("A")] = button.dataset.safeA === "1";
    a.scores[idOf("B")] = button.dataset.safeB === "1";
    render();
    announce(button.textContent.replace(/^\s*\d\s*/, "") + ". " + nextStep());
  }

  function safetySummary(a) {
    const bin = safetyBins(a).find((b) => b.getAttribute("aria-pressed") === "true");
    if (bin) return bin.textContent.replace(/^\s*\d\s*/, "");
    const marks = state.labels.map((label) => {
      const safe = a.scores[idOf(label)];
      return label + " " + (safe === undefined ? "not marked" : safe ? "safe" : "unsafe");
    });
    return marks.join(", ");
  }

  // ------------------------------------------------------------------ axes

  function showAxis(index, focusTab, quiet) {
    const n = state.axes.length;
    state.cur = state.axes[(index + n) % n];
    render();
    const a = state.cur;
    if (focusTab) a.tab.focus(); else a.panel.focus({ preventScroll: true });
    if (!quiet) announce(a.name + ", " + (state.axes.indexOf(a) + 1) + " of " + n + (complete(a) ? ", done." : ": " + todo(a) + "."));
  }

  function todo(a) {  // what an axis still needs, in words
    if (a.kind === "rating") {
      const left = state.labels.filter((label) => !(idOf(label) in a.scores));
      return "rate answer" + (left.length > 1 ? "s " : " ") + left.join(", ") + " from 0 to 4";
    }
    if (a.kind === "safety") {
      if (safetyBins(a).length) return "choose which answers are safe (1 to 4)";
      const left = state.labels.filter((label) => !(idOf(label) in a.scores));
      return "mark answer" + (left.length > 1 ? "s " : " ") + left.join(", ") + " safe (Y) or unsafe (N)";
    }
    return isPair(a) ? "choose which answer is better" : "rank the answers, best first";
  }

  // ------------------------------------------------------------------ drawing

  function render() {
    if (!state) return;
    state.axes.forEach(renderAxis);
    renderAnswers();
    if (state.multi) {
      state.axes.forEach((a) => {
        const on = a === state.cur;
        a.tab.setAttribute("aria-selected", String(on));
        a.tab.tabIndex = on ? 0 : -1;
        a.tab.classList.toggle("done", complete(a));
        el(a.prefix + "state").textContent = complete(a) ? "done" : "to do";
        a.panel.hidden = !on;
      });
      if (state.refused && state.axes.every((a) => complete(a))) { state.refused = false; showError(""); }
    }
    // With axes the button stays on: pressed early, it says which axis is missing.
    el("submit").disabled = (!state.multi && !complete()) || state.sending;
  }

  function renderAxis(a) {
    const board = el(a.prefix + "board");
    if (board) {
      const placedLabels = a.placed.map((p) => p.label);
      placedLabels.forEach((label) => board.appendChild(chip(label, a)));
      chips(a).forEach((c) => {
        if (!placedLabels.includes(c.dataset.label)) board.appendChild(c);
      });
      chips(a).forEach((c) => {
        const entry = a.placed.find((p) => p.label === c.dataset.label);
        c.classList.toggle("placed", Boolean(entry));
        c.classList.toggle("tied", Boolean(entry && entry.tie));
        c.setAttribute("aria-label", "Answer " + c.dataset.label + ", " + rankWhere(a, c.dataset.label));
      });
      board.classList.toggle("tie-next", a.tieNext);
    }
    if (a.pairwise) {
      pairButtons(a).forEach((button) => {
        const on = button.dataset.choice === a.pairwise.choice &&
          (!a.primary || Number(button.dataset.strength || 0) === (a.pairwise.strength || 0));
        button.classList.toggle("chosen", on);
        button.setAttribute("aria-pressed", String(on));
      });
      el(a.prefix + "choice").textContent = pairSummary(a);
    }
    if (a.kind === "rating" || a.kind === "safety") {
      const values = a.kind === "rating" ? [0, 1, 2, 3, 4] : [true, false];
      state.labels.forEach((label, index) => {
        const row = el(a.prefix + "row-" + label);
        if (row) row.classList.toggle("current", index === a.cursor);
        values.forEach((value) => {
          const radio = el(a.prefix + radioName(a, label, value));
          if (radio) radio.checked = a.scores[idOf(label)] === value;
        });
      });
      safetyBins(a).forEach((button) => {
        const on = (idOf("A") in a.scores) && a.scores[idOf("A")] === (button.dataset.safeA === "1") &&
          a.scores[idOf("B")] === (button.dataset.safeB === "1");
        button.classList.toggle("chosen", on);
        button.setAttribute("aria-pressed", String(on));
      });
      const summary = el(a.prefix + "summary");
      if (summary) summary.textContent = safetySummary(a);
    }
  }

  function rankWhere(a, label) {
    const entry = a.placed.find((p) => p.label === label);
    return entry ? "placed " + placeOf(label, a) + (entry.tie ? " (tie)" : "") : "not placed";
  }

  // The answers' badges and names say where each stands on the axis on screen.
  function renderAnswers() {
    const a = state.cur;
    if (isPair(a)) return;  // the choice says it
    let rank = 0;
    const badges = {};
    a.placed.forEach((p) => {
      if (!p.tie) rank += 1;
      badges[p.label] = "#" + rank + (p.tie ? " (tie)" : "");
    });
    state.labels.forEach((label) => {
      let badge = badges[label] || "";
      let where = rankWhere(a, label);
      if (a.kind !== "ranking") {
        const value = a.scores[idOf(label)];
        const marked = value !== undefined;
        badge = !marked ? "" : a.kind === "rating" ? "score " + value : value ? "safe" : "unsafe";
        where = !marked ? (a.kind === "rating" ? "not rated" : "not marked") :
          a.kind === "rating" ? "rated " + value : "marked " + badge;
      }
      const shown = el("badge-" + label);
      if (shown) shown.textContent = badge;
      const card = el("answer-" + label);
      if (card) card.setAttribute("aria-label", "Answer " + label + ", " + where);
    });
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
    if (state.multi) return Object.assign(body, axesPayload(), state.mode === "pairwise" ? {} : { all_bad: flags("all_bad") });
    if (state.mode === "pairwise") {
      const pair = state.cur.pairwise;
      body.tiers = pair.tiers;
      body.strength = pair.strength;
      body.all_bad = pair.allBad;
    } else {
      body.tiers = rankingTiers();
      body.all_bad = flags("all_bad");
    }
    return body;
  }

  // Every axis's labels (a revision resends them all) and the safety marks, in the ids
  // shown. In pairwise mode the ranking's strength is the primary axis's; a rating primary
  // axis gives the score gap (1..4) as the strength.
  function axesPayload() {
    const body = { axes: {} };
    state.axes.forEach((a) => {
      if (a.kind === "safety") body.safety = Object.assign({}, a.scores);
      else if (a.kind === "rating") body.axes[a.key] = { scores: Object.assign({}, a.scores) };
      else body.axes[a.key] = { tiers: isPair(a) ? a.pairwise.tiers : rankingTiers(a) };
    });
    if (state.mode === "pairwise") {
      const primary = state.axes[0];
      if (isPair(primary)) {
        body.strength = primary.pairwise.strength;
        body.all_bad = primary.pairwise.allBad;
      } else {
        const scores = Object.values(primary.scores);
        const gap = Math.abs(scores[0] - scores[1]);
        body.strength = gap ? Math.min(4, gap) : null;
        body.all_bad = false;
      }
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
    if (!state || state.sending) return;
    if (state.multi) {
      const missing = state.axes.find((a) => !complete(a));
      if (missing) { refuse(missing); return; }
    } else if (!complete()) return;
    await sendWork(state.revise ? "revision" : "ranking", payload(), render, "ranking", "Enter");
  }

  // Not sent: the first axis without its labels comes up, with the focus on it, and the
  // error (an alert) says what it needs.
  function refuse(a) {
    state.refused = true;
    showAxis(state.axes.indexOf(a), false, true);
    showError("Not sent: label every axis first. " + a.name + ": " + todo(a) + ".");
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
    if (signedOut(result)) {
      state.sending = false;
      redraw();
      askSignIn(() => sendWork(endpoint, body, redraw, what, retryKeys));
      return;
    }
    if (result.ok || (result.status === 409 && result.data.code !== "idempotency_key_reused")) {
      if (state.revise) {  // Go back done (or refused): back to the item that waited
        notice(result.ok ? "Your new ranking replaced the one you sent." : result.data.detail);
        announce(result.ok ? "Changed. Back to your item." : result.data.detail);
        restoreParked();
        return;
      }
      if (result.ok) { progressDone(); announce("Sent. Next item."); }
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
    if (signedOut(result)) { askSignIn(skip); return; }
    if (result.ok || result.status === 409) { progressSkipped(); announce("Skipped. Next item."); advance(); }
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

  // ------------------------------------------------------------------ go back

  let parked = null;  // {node, state} of the item that waits while a sent one is changed
  const recentPanel = document.getElementById("recent-panel");
  const goBack = document.getElementById("go-back-open");

  async function showRecent() {
    const list = document.getElementById("recent-list");
    const response = await fetch(root.dataset.recentUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    list.innerHTML = await response.text();  // server-rendered, escaped
    Array.from(list.querySelectorAll("button[data-url]")).forEach((button) => {
      button.addEventListener("click", () => openSent(button.dataset.url));
    });
  }

  function toggleRecent() {
    const open = recentPanel.hidden;
    recentPanel.hidden = !open;
    goBack.setAttribute("aria-expanded", String(open));
    if (open) showRecent().then(() => {
      const first = recentPanel.querySelector("button[data-url]");
      if (first) first.focus();
    });
  }

  async function openSent(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status !== 200) { notice("That item can't be changed any more."); showRecent(); return; }
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();  // server-rendered, sanitized HTML
    const article = holder.firstElementChild;
    if (!article || article.tagName !== "ARTICLE") return;
    if (!parked) parked = { node: slot.firstElementChild, state: state };
    slot.replaceChildren(article);
    recentPanel.hidden = true;
    goBack.setAttribute("aria-expanded", "false");
    bind(article);
    const first = cards()[0];
    if (first) first.focus();
    announce("Changing an item you sent. Your ranking is placed; change it and press Enter.");
  }

  function restoreParked() {
    if (!parked) { window.location.reload(); return; }
    slot.replaceChildren(parked.node);
    state = parked.state;
    parked = null;
    if (state) {
      state.sending = false;
      if (state.task === "demonstration") renderDemonstration(); else render();
    }
    window.scrollTo(0, 0);
  }

  if (goBack) goBack.addEventListener("click", toggleRecent);

  // ------------------------------------------------------------------ session ended

  function signedOut(result) {
    return result.status === 401 ||
      (result.status === 403 && ["not_authenticated", "authentication_failed"].includes(result.data.code));
  }

  let pendingRetry = null;

  // The session ended while the annotator worked: the work stays on screen, a sign-in
  // form opens in the page, and once signed in the same request (same Idempotency-Key)
  // is sent again.
  function askSignIn(retry) {
    pendingRetry = retry;
    const panel = document.getElementById("signin-panel");
    panel.hidden = false;
    document.getElementById("signin-error").textContent = "";
    document.getElementById("signin-username").focus();
    announce("Your session ended. Sign in to send your work; it is kept.");
  }

  function signedIn() {
    document.getElementById("signin-panel").hidden = true;
    document.getElementById("signin-password").value = "";
    const retry = pendingRetry;
    pendingRetry = null;
    if (retry) retry();
  }

  const signinForm = document.getElementById("signin-form");
  if (signinForm) {
    signinForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = new URLSearchParams({
        username: document.getElementById("signin-username").value,
        password: document.getElementById("signin-password").value,
        csrfmiddlewaretoken: csrfToken(),
      });
      let response = null;
      try {
        response = await fetch(root.dataset.loginUrl, {
          method: "POST", credentials: "same-origin", body: body, headers: { "X-CSRFToken": csrfToken() },
        });
      } catch (error) { /* shown below */ }
      // A good sign-in redirects away from the sign-in page; a bad one shows it again.
      if (response && response.ok && response.redirected && !new URL(response.url).pathname.startsWith(root.dataset.loginUrl)) {
        signedIn();
      } else {
        document.getElementById("signin-error").textContent =
          "That didn't sign you in: check the username and password, or sign in in a new tab.";
      }
    });
    document.getElementById("signin-retry").addEventListener("click", signedIn);
  }

  // ------------------------------------------------------------------ drawer

  const drawerToggle = document.getElementById("drawer-toggle");
  function setDrawer(open) {
    root.classList.toggle("drawer-open", open);
    drawerToggle.setAttribute("aria-expanded", String(open));
  }
  if (drawerToggle) {
    if (window.matchMedia("(max-width: 1099px)").matches) setDrawer(false);  // a toggle on small screens
    drawerToggle.addEventListener("click", () => {
      const open = !root.classList.contains("drawer-open");
      setDrawer(open);
      if (open && window.matchMedia("(max-width: 1099px)").matches) {
        document.getElementById("drawer").scrollIntoView({ block: "start" });  // below the item on phones
      }
    });
  }

  function notice(message) {
    const el = document.getElementById("notice");
    if (el) el.textContent = message || "";
  }

  function bump(id, delta) {
    const el = document.getElementById(id);
    if (el) el.textContent = String(Math.max(0, Number(el.textContent) + delta));
  }

  function progressDone() {  // one more item sent: "n of N" moves n, N stays
    bump("done-today", 1); bump("done-total", 1); bump("left", -1);
    [["progress-total", "done-total"], ["progress-today", "done-today"]].forEach(([bar, count]) => {
      const meter = document.getElementById(bar);
      if (meter) meter.value = Number(document.getElementById(count).textContent);
    });
  }

  function progressSkipped() {  // a skipped item leaves the "N": nothing more to do there
    bump("left", -1); bump("total-all", -1); bump("total-today", -1);
    [["progress-total", "total-all"], ["progress-today", "total-today"]].forEach(([bar, count]) => {
      const meter = document.getElementById(bar);
      if (meter) meter.max = Math.max(1, Number(document.getElementById(count).textContent));
    });
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
    keyboardScroll(article);
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
    if ((key === "s" || key === "S") && !state.revise) { event.preventDefault(); openSkip(); return; }
    if (state.multi && (key === "]" || key === "[")) {
      event.preventDefault();
      showAxis(state.axes.indexOf(state.cur) + (key === "]" ? 1 : -1), false);
      return;
    }
    const a = state.cur;
    if (a.kind === "rating" || a.kind === "safety") { labelKey(event, a); return; }
    if (isPair(a)) {
      if (/^[1-8]$/.test(key)) {
        const n = Number(key);
        choosePair(n <= 4 ? "A" : "B", n <= 4 ? 5 - n : n - 4);
      } else if (key === "t" || key === "T") choosePair("tie", 0);
      else if ((key === "x" || key === "X") && a.primary) choosePair("bad", 0);
      return;
    }
    if (key === "Backspace") { event.preventDefault(); undo(); return; }
    if (key === "=") { a.tieNext = state.allowTies && a.placed.length > 0; render(); return; }
    if (/^[a-zA-Z]$/.test(key)) pick(key.toUpperCase());
  });

  // A rating axis: 0..4 rates the highlighted answer. The safety bin: 1..4 pick the pair's
  // bin, or Y / N mark the highlighted answer. A letter highlights that answer.
  function labelKey(event, a) {
    const key = event.key;
    const bins = safetyBins(a);
    if (bins.length) {
      if (/^[1-4]$/.test(key)) chooseBin(bins[Number(key) - 1]);
      return;
    }
    if (a.kind === "rating" && /^[0-4]$/.test(key)) labelCurrent(Number(key));
    else if (a.kind === "safety" && (key === "y" || key === "Y")) labelCurrent(true);
    else if (a.kind === "safety" && (key === "n" || key === "N")) labelCurrent(false);
    else if (key === "Backspace") { event.preventDefault(); clearCurrent(); }
    else if (/^[a-zA-Z]$/.test(key)) moveCursor(key.toUpperCase());
  }

  setInterval(() => {
    const timer = document.getElementById("timer");
    if (!state || !timer) return;
    const seconds = Math.floor((Date.now() - state.started) / 1000);
    timer.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
  }, 1000);

  bind(slot.firstElementChild && slot.firstElementChild.tagName === "ARTICLE" ? slot.firstElementChild : null);
  loadNext();
})();
