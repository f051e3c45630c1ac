"""Which characters a page shows as a missing glyph (the box a font draws for a character it
does not have, e.g. an emoji on a machine without an emoji font, as on Debian's Chromium here).

Each visible character is drawn on a canvas in its element's own computed font and compared,
pixel for pixel, with a character no font has (U+10FFFD, private use): the same pixels mean the
browser fell back to the "missing glyph" drawing. Shadow roots (the widget's) are walked too,
and so are placeholders, which are text the reader sees.
"""

from __future__ import annotations

from playwright.sync_api import Page

_FIND_MISSING = r"""
() => {
  const wanted = new Map();
  const note = (text, el) => {
    const style = getComputedStyle(el);
    const font = `${style.fontStyle} ${style.fontWeight} 32px ${style.fontFamily}`;
    for (const ch of text) {
      if (!/\s/u.test(ch)) wanted.set(ch + "\u0000" + font, [ch, font]);
    }
  };
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      if (node.parentElement) note(node.textContent, node.parentElement);
      return;
    }
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.placeholder) note(node.placeholder, node);
      if (node.shadowRoot) walk(node.shadowRoot);
    }
    for (const child of node.childNodes) walk(child);
  };
  walk(document.body);
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const draw = (ch, font) => {
    ctx.clearRect(0, 0, 64, 64);
    ctx.font = font;
    ctx.fillText(ch, 8, 44);
    return ctx.getImageData(0, 0, 64, 64).data.join(",");
  };
  const notdef = new Map();
  const missing = new Set();
  for (const [ch, font] of wanted.values()) {
    if (!notdef.has(font)) notdef.set(font, draw("\u{10FFFD}", font));
    if (draw(ch, font) === notdef.get(font)) missing.add(ch);
  }
  return [...missing].map((ch) => "U+" + ch.codePointAt(0).toString(16).toUpperCase());
}
"""


def missing_glyphs(page: Page) -> list[str]:
    """The code points (``U+1F4AC`` …) the page draws as a missing glyph, empty if none."""
    found: list[str] = page.evaluate(_FIND_MISSING)
    return sorted(found)
