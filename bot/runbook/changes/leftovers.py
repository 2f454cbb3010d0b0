"""What a run cut short leaves on a host, put right before the next run uses it (and by the
recovery at restart, bot/runbook/changes/repair.py): `bin` missing while `current` is set (an
adoption killed between its two renames) is linked again; half-unpacked releases
(`releases/.partial-*`), half-sent uploads (`packages/.*.upload-*`), half-written backups of
this environment and stray links are removed. Only under the environment's lock: nothing else
is writing there then.
"""

from __future__ import annotations

from bot.runbook.changes.releases import Layout, run_checked
from bot.transport.base import Transport

# One line, values as positional parameters ($1 install_dir, $2 backup_dir, $3 environment);
# prints one line per thing done.
TIDY = (
    'd=$1; b=$2; if [ -d "$b" ]; then for f in "$b/.eventmesh-backup-$3-"*.partial; do '
    'if [ -e "$f" ]; then rm -f -- "$f" && printf "removed %s\\n" "$f"; fi; done; fi; '
    '[ -d "$d" ] || exit 0; cd "$d" || exit 1; '
    "if [ ! -e bin ] && [ ! -L bin ] && [ -L current ]; then ln -sfn current/bin .bin.new && "
    'mv -T .bin.new bin && echo "relinked bin"; fi; '
    "for f in releases/.partial-* packages/.*.upload-* .current.new .bin.new .bin.adopted; do "
    'if [ -e "$f" ] || [ -L "$f" ]; then rm -rf -- "$f" && printf "removed %s\\n" "$f"; fi; done'
)


def tidy_command(layout: Layout) -> list[str]:
    return ["sh", "-c", TIDY, "tidy", layout.install_dir, layout.backup_dir, layout.environment]


async def tidy(host: Transport, layout: Layout) -> list[str]:
    """Put right what a run cut short left on host: what was done, one line each."""
    (result,) = await run_checked(host, [tidy_command(layout)])
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]
