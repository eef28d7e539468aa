"""Screenshot `zephyr-train demo RUN_DIR`'s "SFT vs final" tab after a question, in headless Chromium.

What docs/demo.md shows was made with it, on the real SmolLM2-135M run of benchmarks/real_model.py:

    python scripts/demo_screenshot.py runs/bench-real-model/sft-dpo docs/demo-smollm2.png \
        --prompt "What is the capital of France, and what is it known for?"

Needs Chromium (`apt-get install chromium`) and Playwright (in the `dev` extra; it drives the system's
Chromium, no browser download). The demo app runs in this process, greedy, as `zephyr-train demo` serves it.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--prompt", default="What is the capital of France, and what is it known for?")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("no Chromium here: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from zephyr_train.publish import demo

    app = demo.prepare(args.run_dir, demo.sampling_from(0.7, 0.95, args.max_new_tokens, True, 1.0))  # greedy
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("tab", name="SFT vs final").click()
            page.locator("#sbs-prompt textarea").fill(args.prompt)
            page.locator("#sbs-ask").click()
            for elem in ("#sbs-sft", "#sbs-final"):  # both answers streamed to their end
                page.wait_for_function("sel => document.querySelector(sel + ' textarea').value.length > 0",
                                       arg=elem, timeout=600_000)
            page.wait_for_function("() => !document.querySelector('.generating')", timeout=600_000)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        app.close()
    print(args.out)


if __name__ == "__main__":
    main()
