#!/usr/bin/env bash
# Install (or remove) the CovidSeg Assist bundle for the current user, no root needed:
#   the bundle -> ~/.local/opt/covidseg-assist, a `covidseg-assist` launcher in ~/.local/bin,
#   the menu entry in ~/.local/share/applications, the icons in ~/.local/share/icons/hicolor.
# Usage (from the unpacked bundle):  linux/install.sh [--uninstall]     PREFIX=/opt/... for another place.
# build.sh copies this script, the .desktop entry and the icons into the bundle's linux/ folder.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUNDLE=$(dirname "$HERE")
PREFIX=${PREFIX:-$HOME/.local}
DEST=$PREFIX/opt/covidseg-assist
APPS=$PREFIX/share/applications
ICONS=$PREFIX/share/icons/hicolor

refresh_menus() {
    # desktop environments pick up new entries by themselves; these only speed it up where they exist
    command -v update-desktop-database >/dev/null && update-desktop-database -q "$APPS" || true
    command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$ICONS" || true
}

if [[ "${1:-}" == "--uninstall" ]]; then
    rm -rf "$DEST" "$APPS/covidseg-assist.desktop" "$PREFIX/bin/covidseg-assist"
    find "$ICONS" -name covidseg-assist.png -delete 2>/dev/null || true
    refresh_menus
    echo "CovidSeg Assist removed from $PREFIX (projects and settings are kept)."
    exit 0
fi

[[ -x "$BUNDLE/covidseg-assist" ]] || { echo "error: $BUNDLE/covidseg-assist not found: run this script from the unpacked bundle" >&2; exit 2; }
if [[ "$BUNDLE" != "$DEST" ]]; then
    # copy beside the old install, then swap, so a failed copy leaves the previous version working
    mkdir -p "$PREFIX/opt"
    rm -rf "$DEST.new"
    cp -a "$BUNDLE/." "$DEST.new"
    rm -rf "$DEST.old"
    [[ -e "$DEST" ]] && mv "$DEST" "$DEST.old"
    mv "$DEST.new" "$DEST"
    rm -rf "$DEST.old"
fi
mkdir -p "$PREFIX/bin" "$APPS"
ln -sfn "$DEST/covidseg-assist" "$PREFIX/bin/covidseg-assist"
for png in "$HERE"/icons/covidseg-assist-*.png; do
    size=${png##*-}; size=${size%.png}
    install -Dm644 "$png" "$ICONS/${size}x${size}/apps/covidseg-assist.png"
done
sed -e "s|^Exec=.*|Exec=\"$DEST/covidseg-assist\" %f|" -e "s|^TryExec=.*|TryExec=$DEST/covidseg-assist|" \
    "$HERE/covidseg-assist.desktop" > "$APPS/covidseg-assist.desktop"
chmod 644 "$APPS/covidseg-assist.desktop"
refresh_menus
echo "CovidSeg Assist installed in $DEST; start it from the applications menu or with: $PREFIX/bin/covidseg-assist"
