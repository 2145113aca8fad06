"""Opens a report page in headless Chromium, JavaScript off, and prints what it saw as JSON:
console errors, requests that left the page's folder (anything but file://), images that did
not load, the accuracy shown, and the size of a full-page screenshot written to SHOT.

    browser.py PAGE.html SHOT.png [--readme OUT.png]

Playwright (PyPI) drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM): Playwright's own
browser download is not used. --readme also writes a smaller picture of the page's top (the
README's screenshot).
"""

import json
import os
import pathlib
import sys

from playwright.sync_api import sync_playwright

page_file = pathlib.Path(sys.argv[1]).resolve()
shot = sys.argv[2]
readme = sys.argv[sys.argv.index("--readme") + 1] if "--readme" in sys.argv else None

errors, requests = [], []
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith("file://") else requests.append(r.url))
    page.goto(page_file.as_uri(), wait_until="load")
    broken = [
        img.get_attribute("src")
        for img in page.locator("img").all()
        if not img.evaluate("e => e.complete && e.naturalWidth > 0")
    ]
    accuracy = page.locator("#accuracy")
    page.screenshot(path=shot, full_page=True)
    if readme:
        page.set_viewport_size({"width": 1100, "height": 1500})
        page.screenshot(path=readme, clip={"x": 0, "y": 0, "width": 1100, "height": 1500})
    seen = {
        "console_errors": errors,
        "network_requests": requests,
        "broken_images": broken,
        "accuracy": accuracy.text_content(),
        "accuracy_value": accuracy.get_attribute("data-value"),
    }
    browser.close()

from PIL import Image  # noqa: E402  (the venv's Pillow)

with Image.open(shot) as im:
    seen["screenshot"] = list(im.size)
if readme:
    with Image.open(readme) as im:
        # A palette PNG at 3/4 size: small enough for the repository, text still readable.
        small = im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
        small.quantize(colors=128).save(readme, optimize=True)
print(json.dumps(seen))
