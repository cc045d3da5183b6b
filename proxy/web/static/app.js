// The little script the pages use: select all, copy buttons, the cron reading, mirror status polling.
// Everything works without it except these conveniences.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll("[data-select-all]")) {
    all.addEventListener("change", () => {
      const form = all.closest("form");
      for (const box of form.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)) {
        box.checked = all.checked;
      }
    });
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const text = source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {
        source.select();
        document.execCommand("copy");
      }
      button.dataset.copied = text;
      const label = button.firstChild;
      label.textContent = "Copied";
      setTimeout(() => { label.textContent = "Copy"; }, 2000);
    });
  }

  for (const back of document.querySelectorAll("[data-back]")) {
    back.addEventListener("click", (event) => { event.preventDefault(); history.back(); });
  }

  for (const input of document.querySelectorAll("input[data-cron]")) {
    const out = document.getElementById(input.id + "-reading");
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const response = await fetch("/cron.json?expr=" + encodeURIComponent(input.value));
        const reading = await response.json();
        out.textContent = reading.text;
        out.classList.toggle("error", !reading.valid);
      }, 250);
    });
  }

  for (const table of document.querySelectorAll("table[data-poll]")) {
    poll(table);
  }
});

const ACTIVE = new Set(["queued", "running", "stopping"]);

function isActive(table) {
  return [...table.querySelectorAll("[data-field=status]")].some((cell) => ACTIVE.has(cell.textContent.trim()));
}

// While a run goes, ask the small status endpoint every second and update the rows in place.
async function poll(table) {
  const state = document.getElementById("poll-state");
  table.dataset.polling = "no";
  if (!isActive(table)) return;
  table.dataset.polling = "yes";
  try {
    const response = await fetch(table.dataset.poll, { headers: { Accept: "application/json" } });
    if (response.ok) {
      const data = await response.json();
      for (const item of data.items) {
        const row = table.querySelector(`tr[data-key="${CSS.escape(item.key)}"]`);
        if (!row) continue;
        for (const field of ["status", "step", "description", "finished_at"]) {
          const cell = row.querySelector(`[data-field=${field}]`);
          if (cell && cell.textContent !== String(item[field] ?? "")) cell.textContent = item[field] ?? "";
        }
        const status = row.querySelector("[data-field=status]");
        if (status) status.className = "status status-" + item.status.replace(/ /g, "-");
      }
      if (state) state.textContent = isActive(table) ? "Updating while a run goes…" : "";
    }
  } catch (e) {
    // the server may restart: try again on the next tick
  }
  setTimeout(() => poll(table), 1000);
}
