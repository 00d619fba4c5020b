// Adjudication view: build the final ranking by drag or keyboard; Shift+C/R/X and Enter act.
// Controls are found by id (answer text on the page is HTML too and could carry any class).
(function () {
  "use strict";
  const form = document.getElementById("adjudicate-form");
  if (!form) return;
  const board = document.getElementById("final-board");
  const field = document.getElementById("final-tiers");
  let typed = [];          // [{label, tie}] from the keyboard, best first
  let tieNext = false;

  function chips() { return Array.from(board.children).filter((c) => c.id.startsWith("final-chip-")); }
  function chip(label) { return document.getElementById("final-chip-" + label); }

  function sync() {
    const tiers = [];
    chips().forEach((c, index) => {
      const id = Number(c.dataset.id);
      if (c.classList.contains("tied") && index > 0) tiers[tiers.length - 1].push(id);
      else tiers.push([id]);
    });
    field.value = JSON.stringify(tiers);
  }

  function applyTyped() {
    typed.forEach((entry) => {
      const placed = chip(entry.label);
      board.appendChild(placed);
      placed.classList.toggle("tied", entry.tie);
    });
    const placed = new Set(typed.map((e) => e.label));
    chips().forEach((c) => { if (!placed.has(c.dataset.label)) board.appendChild(c); });
    sync();
  }

  if (window.Sortable) window.Sortable.create(board, { animation: 120, onEnd: sync });
  sync();

  function submitWith(action) {
    const button = document.getElementById("action-" + action);
    if (button && !button.disabled) button.click();
  }

  // Shortcuts never override a focused control: Enter on a focused "Discard" discards.
  const CONTROLS = "a[href], button, input, select, textarea, summary, [contenteditable]";

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && target.closest && target.closest(CONTROLS)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "Enter") { event.preventDefault(); submitWith("set_ranking"); return; }
    // Actions take Shift so that plain letters can always name answers.
    if (event.shiftKey && key === "C") { submitWith("accept_consensus"); return; }
    if (event.shiftKey && key === "R") { submitWith("send_back"); return; }
    if (event.shiftKey && key === "X") { submitWith("discard"); return; }
    if (event.shiftKey) return;
    if (key === "=") { tieNext = typed.length > 0; return; }
    if (key === "Backspace") { event.preventDefault(); typed.pop(); applyTyped(); return; }
    const label = key.toUpperCase();
    if (/^[A-P]$/.test(label) && chip(label) &&
        !typed.some((e) => e.label === label)) {
      typed.push({ label: label, tie: tieNext });
      tieNext = false;
      applyTyped();
    }
  });
})();
