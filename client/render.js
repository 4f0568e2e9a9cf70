// DOM rendering. Every name and body goes in through textContent, never as
// HTML, so a message like `<img src=x onerror=...>` shows as the text it is.

import { dayLabel, formatTime } from "./format.js";

/**
 * Creates an element with classes and optional text.
 * @param {string} tag
 * @param {string[]} [classes]
 * @param {string} [text] inserted as text, never parsed as HTML
 * @returns {HTMLElement}
 */
function element(tag, classes = [], text = undefined) {
  const node = document.createElement(tag);
  node.classList.add(...classes);
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/**
 * Returns a string that changes whenever an item must be drawn differently,
 * so the reconciler can reuse a node whose signature is unchanged.
 */
function signatureOf(item, now) {
  switch (item.kind) {
    case "message":
      return `${item.own}|${item.groupStart}`;
    case "day":
      return dayLabel(item.time, now);
    default:
      return "";
  }
}

function messageElement(item) {
  const { message, time, own, groupStart } = item;
  const classes = ["message", own ? "own" : "other"];
  if (groupStart) {
    classes.push("group-start");
  }
  const node = element("li", classes);

  // Screen readers get the author on every message; sighted readers see it
  // once per group, and not at all on their own messages.
  const authorName = own ? "You" : String(message.user?.name ?? "unknown");
  const author = element("span", ["author"], authorName);
  if (own || !groupStart) {
    author.classList.add("visually-hidden");
  }
  node.append(author);

  const bubble = element("div", ["bubble"]);
  bubble.append(element("span", ["body"], String(message.body ?? "")));
  const timeNode = element("time", ["time"], formatTime(time));
  timeNode.dateTime = message.time;
  timeNode.title = time.toLocaleString();
  bubble.append(timeNode);
  node.append(bubble);
  return node;
}

function dayElement(item, now) {
  const node = element("li", ["day-separator"]);
  const label = element("time", [], dayLabel(item.time, now));
  label.dateTime = item.day;
  node.append(label);
  return node;
}

function noticeElement(item) {
  const { notice } = item;
  const verb = notice.kind === "joined" ? "joined" : "left";
  const node = element("li", ["notice"]);
  node.append(element("span", [], `${notice.user?.name ?? "Someone"} ${verb} · ${formatTime(notice.time)}`));
  return node;
}

function itemElement(item, now) {
  switch (item.kind) {
    case "message":
      return messageElement(item);
    case "day":
      return dayElement(item, now);
    default:
      return noticeElement(item);
  }
}

/**
 * Updates the message list to show `items`, reusing the nodes of items that
 * are already shown. Reuse keeps the reader's selection and focus, and means
 * the aria-live region announces only nodes that are really new.
 * @param {HTMLOListElement} list
 * @param {Array<object>} items from buildTimelineItems
 * @param {Date} now for "Today" and "Yesterday" labels
 */
export function renderTimeline(list, items, now) {
  // Removing stale nodes first keeps the walk below from moving every node
  // that follows a stale one.
  const wanted = new Set(items.map((item) => item.key));
  const existing = new Map();
  for (const child of [...list.children]) {
    if (wanted.has(child.dataset.key)) {
      existing.set(child.dataset.key, child);
    } else {
      child.remove();
    }
  }

  let cursor = list.firstElementChild;
  for (const item of items) {
    const signature = signatureOf(item, now);
    let node = existing.get(item.key);
    if (node === undefined || node.dataset.signature !== signature) {
      const fresh = itemElement(item, now);
      fresh.dataset.key = item.key;
      fresh.dataset.signature = signature;
      if (node !== undefined) {
        if (node === cursor) {
          cursor = node.nextElementSibling;
        }
        node.replaceWith(fresh);
        existing.delete(item.key);
      }
      node = fresh;
    }

    if (node === cursor) {
      cursor = cursor.nextElementSibling;
    } else {
      list.insertBefore(node, cursor);
    }
  }
}

/**
 * Shows who is online, sorted by name, marking this session's user.
 * @param {HTMLUListElement} list
 * @param {Iterable<{id: string, name: string}>} users
 * @param {string|null} selfId
 */
export function renderPresence(list, users, selfId) {
  const sorted = [...users].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const nodes = sorted.map((user) => {
    const node = element("li", ["presence-user"], String(user.name));
    if (user.id === selfId) {
      node.classList.add("self");
      node.append(element("span", ["self-marker"], " (you)"));
    }
    return node;
  });
  list.replaceChildren(...nodes);
}
