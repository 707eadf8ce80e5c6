// pipelined event inspector: the little the pages do in the browser.
// Everything an event holds is put in the page as text (textContent),
// never as HTML, and nothing here evaluates it.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  selectAll();
  replayProgress();
  liveTail();
});

// A checkbox with data-select-all="name" ticks every checkbox of that name
// in its form.
function selectAll() {
  document.querySelectorAll("input[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      box.form.querySelectorAll('input[type=checkbox][name="' + box.dataset.selectAll + '"]').forEach(function (b) {
        b.checked = box.checked;
      });
    });
  });
}

function setText(id, v) {
  var el = document.getElementById(id);
  if (el) el.textContent = String(v);
}

function ts(s) {
  if (!s || s.indexOf("0001-") === 0) return "—";
  return s.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z");
}

function replayProgress() {
  var sec = document.getElementById("replay-progress");
  if (!sec || !window.EventSource) return;
  var es = new EventSource(sec.dataset.stream);
  function show(ev) {
    var v = JSON.parse(ev.data), p = v.progress;
    document.getElementById("rp-bar").value = v.percent;
    setText("rp-state", v.error ? "failed" : v.done ? "done" : "running");
    setText("rp-scanned", p.scanned);
    setText("rp-matched", p.matched);
    setText("rp-enqueued", p.enqueued);
    setText("rp-already", p.already_queued - p.in_dead_letter_queue); // already_queued counts the dead letters too
    setText("rp-dead", p.in_dead_letter_queue);
    setText("rp-at", ts(p.at));
    if (v.error) {
      var e = document.getElementById("rp-error");
      e.textContent = v.error;
      e.hidden = false;
    }
    if (v.done) es.close();
  }
  es.addEventListener("progress", show);
  es.addEventListener("done", show);
}

function liveTail() {
  var table = document.getElementById("tail");
  if (!table || !window.EventSource) return;
  var body = table.tBodies[0], status = document.getElementById("tail-status");
  var paused = false, seen = 0, max = 200;
  var pause = document.getElementById("tail-pause");
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
  });
  // What the page did not show: the server counts the events it had to
  // leave out on this connection (they came faster than the page took
  // them) and sends the total after an event; a reconnect starts a new
  // count and misses what was appended while disconnected.
  var note = document.getElementById("tail-dropped");
  var connected = false, reconnected = false, lostBefore = 0, lostNow = 0;
  function showLost() {
    var n = lostBefore + lostNow, text = "";
    if (n > 0) text = n + " event" + (n === 1 ? "" : "s") + " not shown: the tail could not keep up. ";
    if (reconnected) text += "Events appended while the tail was disconnected are not shown" + (n > 0 ? " either. " : ". ");
    note.textContent = text + "The event list has every event.";
    note.hidden = n === 0 && !reconnected;
  }
  var es = new EventSource(table.dataset.stream);
  es.addEventListener("hello", function (ev) {
    if (connected) {
      lostBefore += lostNow;
      lostNow = 0;
      reconnected = true;
      showLost();
    }
    connected = true;
    var src = JSON.parse(ev.data).source;
    status.textContent = "Following " + (src ? "source " + src : "every source") + ": new events appear at the top.";
  });
  es.addEventListener("dropped", function (ev) {
    lostNow = JSON.parse(ev.data).dropped;
    showLost();
  });
  es.onerror = function () { status.textContent = "Disconnected; trying again…"; };
  es.onmessage = function (ev) {
    if (paused) return;
    var e = JSON.parse(ev.data);
    var tr = document.createElement("tr");
    function cell(text, cls) {
      var td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
      return td;
    }
    cell(ts(e.received_at));
    var id = cell("", "mono"), a = document.createElement("a");
    a.href = "/ui/events/" + encodeURIComponent(e.id);
    a.textContent = e.id;
    id.appendChild(a);
    cell(e.source);
    cell(e.sinks.join(", "));
    cell(String(e.size), "num");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > max) body.deleteRow(body.rows.length - 1);
    seen++;
    status.textContent = seen + " new event" + (seen === 1 ? "" : "s") + " since you opened this page.";
  };
}
