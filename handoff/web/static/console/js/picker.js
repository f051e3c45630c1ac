// A searchable list (combobox + listbox): type to filter, arrows to move, Enter to choose.
import { h } from "./dom.js";

let counter = 0;

/** items: [{value, label, detail?, hint?}]; onChoose(value). `free`: also offer the typed text
 * (when the full list is not available). */
export function picker({ label, items, onChoose, free = false }) {
  const id = `picker-${++counter}`;
  const input = h("input", {
    type: "search", class: "picker-input", role: "combobox", "aria-label": label,
    "aria-controls": `${id}-list`, "aria-expanded": "true", "aria-autocomplete": "list",
    placeholder: `${label}: type to search`, autocomplete: "off",
  });
  const list = h("ul", { class: "picker-list", role: "listbox", id: `${id}-list`,
                         "aria-label": label });
  let shown = [];
  let active = 0;

  function render() {
    const query = input.value.trim().toLowerCase();
    shown = items.filter((item) => !query || item.value.toLowerCase().includes(query)
      || String(item.detail || "").toLowerCase().includes(query)).slice(0, 50);
    if (free && query && !shown.some((i) => i.value.toLowerCase() === query)) {
      shown.push({ value: input.value.trim(), label: `Use "${input.value.trim()}"` });
    }
    active = Math.min(active, Math.max(shown.length - 1, 0));
    list.replaceChildren(...shown.map((item, index) => h("li", {
      role: "option", id: `${id}-${index}`, class: "picker-option",
      "aria-selected": index === active ? "true" : "false",
      onmousedown: (event) => event.preventDefault(),
      onclick: () => onChoose(item.value),
    }, h("span", { class: "picker-label", text: item.label || item.value }),
    item.hint ? h("span", { class: "picker-hint", text: item.hint }) : null,
    item.detail ? h("span", { class: "picker-detail", text: item.detail }) : null)));
    if (!shown.length) list.append(h("li", { class: "empty", text: "Nothing matches." }));
    input.setAttribute("aria-activedescendant", shown.length ? `${id}-${active}` : "");
  }

  input.addEventListener("input", () => { active = 0; render(); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") { active = Math.min(active + 1, shown.length - 1); render(); }
    else if (event.key === "ArrowUp") { active = Math.max(active - 1, 0); render(); }
    else if (event.key === "Enter") {
      event.preventDefault();
      if (shown[active]) onChoose(shown[active].value);
      return;
    } else return;
    event.preventDefault();
    const option = list.children[active];
    if (option && option.scrollIntoView) option.scrollIntoView({ block: "nearest" });
  });
  render();
  return { element: h("div", { class: "picker" }, input, list), input };
}
