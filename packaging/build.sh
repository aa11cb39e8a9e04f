#!/usr/bin/env bash
# Build the one-folder desktop bundle dist/covidseg-assist/ from a clean environment, then smoke-test it.
#
#   bash packaging/build.sh            # reuses build/venv when the pins have not changed
#   bash packaging/build.sh --clean    # a fresh venv and a fresh PyInstaller work folder
#
# Steps: own venv under build/ (python3 -m venv) -> pinned torch (the CPU build by default) -> requirements.txt ->
# pinned PyInstaller -> icons from resources/icon.svg -> pyinstaller packaging/covidseg-assist.spec ->
# the frozen app's smoke test, run headless from outside the repository with no Python on its path.
# Numbers (bundle size, start-up time, smoke-test time) go to build/packaging-report.json.
#
# Environment:
#   PYTHON=python3          the interpreter the venv is made from (3.10+)
#   TORCH_SPEC=torch==2.13.0
#   TORCH_INDEX_URL=        the index to take the torch wheel (and its dependencies) from, e.g. PyTorch's CUDA index
#   TORCH_VARIANT=cpu       cpu: fail if the installed torch is a CUDA build (an unpinned or wrong wheel would pull
#                           GBs of CUDA libraries); cuda: fail if it is not (docs/packaging.md, "CUDA build")
#   SMOKE_TIMEOUT=1800      seconds before the smoke test gives up
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
PYINSTALLER_PINS="pyinstaller==6.22.3 pyinstaller-hooks-contrib==2026.9"
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-1800}
VENV=build/venv
WORK=build/pyinstaller
DIST=dist
BUNDLE=$DIST/covidseg-assist
REPORT=build/packaging-report.json

case "$(uname -s)" in
    MINGW*|MSYS*|CYGWIN*) BIN=$VENV/Scripts; EXE=$BUNDLE/covidseg-assist-cli.exe ;;
    Darwin) BIN=$VENV/bin; EXE="$DIST/CovidSeg Assist.app/Contents/MacOS/covidseg-assist" ;;
    *) BIN=$VENV/bin; EXE=$BUNDLE/covidseg-assist ;;
esac

if [[ "${1:-}" == "--clean" ]]; then
    rm -rf "$VENV" "$WORK" "$BUNDLE" "$DIST/CovidSeg Assist.app" build/icons build/smoke
fi
mkdir -p build
now() { "$PYTHON" -c 'import time; print(f"{time.time():.3f}")'; }
T_START=$(now)

# --- 1. a clean venv with pinned packages (rebuilt when a pin changes) ---------------------------------------
PINS_ID=$("$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open("requirements.txt","rb").read()).hexdigest()[:16])')
PINS_ID="$PINS_ID $TORCH_SPEC $TORCH_INDEX_URL $PYINSTALLER_PINS"
if [[ ! -f "$VENV/.pins" || "$(cat "$VENV/.pins")" != "$PINS_ID" ]]; then
    echo "== 1. venv $VENV (torch: $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL})"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build on Linux
    if [[ -n "$TORCH_INDEX_URL" ]]; then
        "$BIN/python" -m pip install -q --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
    else
        "$BIN/python" -m pip install -q "$TORCH_SPEC"
    fi
    "$BIN/python" -m pip install -q -r requirements.txt $PYINSTALLER_PINS
    echo "$PINS_ID" > "$VENV/.pins"
else
    echo "== 1. venv $VENV is up to date"
fi
"$BIN/python" - "$TORCH_VARIANT" <<'EOF'
import sys
import torch
variant = sys.argv[1]
cuda = torch.version.cuda
print(f"   torch {torch.__version__}, CUDA {cuda or 'none'}")
if variant == "cpu" and cuda:
    sys.exit(f"error: torch {torch.__version__} is a CUDA build; TORCH_VARIANT=cpu expects the CPU wheel "
             "(set TORCH_VARIANT=cuda to bundle it on purpose)")
if variant == "cuda" and not cuda:
    sys.exit("error: TORCH_VARIANT=cuda but the installed torch is a CPU build: install the CUDA wheel (TORCH_SPEC, "
             "TORCH_INDEX_URL)")
EOF
T_VENV=$(now)

# --- 2. icons, then PyInstaller ------------------------------------------------------------------------------
echo "== 2. icons from resources/icon.svg -> build/icons"
QT_QPA_PLATFORM=offscreen "$BIN/python" packaging/make_icons.py build/icons
echo "== 3. pyinstaller (one folder) -> $BUNDLE (log: build/pyinstaller.log)"
if ! "$BIN/python" -m PyInstaller --noconfirm --log-level WARN --distpath "$DIST" --workpath "$WORK" \
        packaging/covidseg-assist.spec > build/pyinstaller.log 2>&1; then
    tail -40 build/pyinstaller.log
    echo "error: PyInstaller failed (full log: build/pyinstaller.log)" >&2
    exit 1
fi
if [[ "$(uname -s)" == Linux ]]; then
    # the menu entry, its icons and a per-user installer travel inside the bundle
    mkdir -p "$BUNDLE/linux/icons"
    cp packaging/linux/covidseg-assist.desktop packaging/linux/install.sh "$BUNDLE/linux/"
    cp build/icons/covidseg-assist-{16,24,32,48,64,128,256,512}.png "$BUNDLE/linux/icons/"
fi
X11_MISSING=""
if [[ "$(uname -s)" == Linux ]]; then
    # Qt's X11 plugin loads system libraries that PyInstaller bundles only when the build machine has them; what is
    # missing here must be installed on every target desktop instead (Debian/Ubuntu: libxcb-icccm4 libxcb-keysyms1)
    XCB=$(find "$BUNDLE/_internal" -path "*platforms/libqxcb.so" | head -1)
    if [[ -n "$XCB" ]]; then
        X11_MISSING=$(LD_LIBRARY_PATH="$BUNDLE/_internal:$(dirname "$XCB")/../../lib" ldd "$XCB" \
                      | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ' || true)
    fi
    if [[ -n "$X11_MISSING" ]]; then
        echo "   warning: not bundled, so needed on the target for X11: $X11_MISSING(install them here and rebuild" \
             "to bundle them: apt-get install libxcb-icccm4 libxcb-keysyms1)"
    fi
fi
T_BUILT=$(now)
BUNDLE_BYTES=$(du -sb "$BUNDLE" | cut -f1)
echo "   bundle: $BUNDLE, $(du -sh "$BUNDLE" | cut -f1)"

# --- 3. smoke test of the frozen app: headless, outside the repository, no Python on any path --------------------
echo "== 4. smoke test: GUI opens the demo, JPEG 2000 DICOM, train --fast, predict -> NIfTI"
SMOKE=$ROOT/build/smoke
rm -rf "$SMOKE"
mkdir -p "$SMOKE"
EXE_ABS=$ROOT/$EXE
run_frozen() {
    (cd "$SMOKE" && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen \
        MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 "$@")
}
# a cold start: push the bundle's files out of the page cache first (Linux; other files' caches are untouched)
sync
"$BIN/python" - "$BUNDLE" <<'EOF'
import os, sys
if hasattr(os, "posix_fadvise"):
    for root, _, files in os.walk(sys.argv[1]):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
EOF
run_frozen env COVIDSEG_LAUNCH_T0="$(now)" "$EXE_ABS" --smoke-test "$SMOKE/out" --timeout "$SMOKE_TIMEOUT" \
    > "$SMOKE/stdout.log" 2>&1 && SMOKE_RC=0 || SMOKE_RC=$?
tail -3 "$SMOKE/out/smoke.log" 2>/dev/null || tail -5 "$SMOKE/stdout.log"
run_frozen "$EXE_ABS" cli --version
# the `cli` word reaches the command line: describe the demo volume the smoke test wrote
if ! run_frozen "$EXE_ABS" cli info "$SMOKE/out/demo/study/volume/ct.nii.gz" > "$SMOKE/info.json"; then
    [[ "$SMOKE_RC" != 0 ]] || SMOKE_RC=5
fi
T_END=$(now)

"$BIN/python" - "$SMOKE/out/smoke-report.json" "$REPORT" "$BUNDLE_BYTES" "$T_START" "$T_VENV" "$T_BUILT" "$T_END" \
        "$SMOKE_RC" "$X11_MISSING" <<'EOF'
import json, platform, sys
from pathlib import Path
smoke_path, out, size, t0, t_venv, t_built, t_end, rc, x11_missing = sys.argv[1:]
smoke = json.loads(Path(smoke_path).read_text()) if Path(smoke_path).is_file() else {"ok": False, "error": "no report"}
report = {
    "platform": platform.platform(),
    "bundle_bytes": int(size),
    "bundle_mib": round(int(size) / 2**20, 1),
    "venv_s": round(float(t_venv) - float(t0), 1),
    "pyinstaller_s": round(float(t_built) - float(t_venv), 1),
    "smoke_s": round(float(t_end) - float(t_built), 1),
    "x11_libraries_not_bundled": x11_missing.split(),
    "smoke_exit": int(rc),
    "smoke_ok": bool(smoke.get("ok")) and int(rc) == 0,
    "smoke_timings_s": smoke.get("timings_s"),
    "smoke_error": smoke.get("error"),
    "versions": smoke.get("versions"),
    "prediction": smoke.get("prediction"),
}
Path(out).write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
EOF
if [[ "$SMOKE_RC" != 0 ]]; then
    echo "error: the smoke test failed (exit $SMOKE_RC): see $SMOKE/out/smoke-report.json and $SMOKE/out/smoke.log" >&2
    exit 1
fi
echo "Done: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); smoke test passed. Report: $REPORT"
