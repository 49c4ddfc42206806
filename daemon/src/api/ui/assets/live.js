// remedy's web action center: the one script. Live follow on the history page (polls the feed
// for records newer than the newest shown and adds them at the top, as text), and column labels
// for stacked tables on narrow screens. No framework, nothing inline (the CSP forbids it).
"use strict";

function labelCells(table) {
  const headers = Array.from(table.querySelectorAll("thead th")).map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    Array.from(row.children).forEach((cell, i) => {
      if (headers[i] && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", headers[i]);
    });
  }
}

function cell(text, nowrap) {
  const td = document.createElement("td");
  if (nowrap) td.className = "nowrap";
  td.textContent = text;
  return td;
}

function rowOf(r) {
  const tr = document.createElement("tr");
  tr.className = "new";
  tr.appendChild(cell(String(r.id), true));
  tr.appendChild(cell(r.at, true));
  tr.appendChild(cell(r.event, true));
  for (const text of [r.manifests, r.account, r.action]) tr.appendChild(cell(text, false));
  const outcome = document.createElement("td");
  if (r.outcome) {
    const badge = document.createElement("span");
    badge.className = "badge " + (["good", "info", "warn", "bad"].includes(r.tone) ? r.tone : "neutral");
    badge.textContent = r.outcome;
    outcome.appendChild(badge);
  }
  tr.appendChild(outcome);
  tr.appendChild(cell(r.detail, false));
  const commit = document.createElement("td");
  commit.className = "nowrap";
  const code = document.createElement("code");
  code.textContent = (r.commit || "").slice(0, 12);
  commit.appendChild(code);
  tr.appendChild(commit);
  return tr;
}

function follow(table) {
  const box = document.getElementById("follow");
  const state = document.getElementById("live-state");
  let after = Number(table.dataset.after || "0");
  const feed = table.dataset.feed;
  async function poll() {
    if (!box.checked) return;
    const url = feed + (feed.endsWith("?") ? "" : "&") + "after=" + after;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401) {
        state.textContent = "Signed out: reload to sign in again.";
        box.checked = false;
        return;
      }
      if (!response.ok) {
        state.textContent = "Live follow failed (" + response.status + "), retrying.";
        return;
      }
      const body = await response.json();
      const tbody = table.querySelector("tbody");
      // The feed is newest first: insert the oldest first, each at the top.
      for (const r of body.rows.slice().reverse()) {
        tbody.insertBefore(rowOf(r), tbody.firstChild);
        after = Math.max(after, r.id);
      }
      if (body.rows.length) {
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
        labelCells(table);
        state.textContent = body.rows.length + " new record(s).";
      } else {
        state.textContent = "Up to date.";
      }
    } catch (e) {
      state.textContent = "Live follow failed, retrying.";
    }
  }
  setInterval(poll, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll(".scroll table")) labelCells(table);
  const history = document.getElementById("history");
  if (history && document.getElementById("follow")) follow(history);
});
