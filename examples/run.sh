#!/usr/bin/env bash
# The main job on the bundled example (a small amd64 kernel with DWARF types and its
# crash dump): decompress it into work/, triage it with kvm-dbg, then open it in gdb
# and look around.  Every command is printed before its output.
#   KVM_DBG         kvm-dbg to run (default: ../.venv/bin/kvm-dbg)
#   KVM_GDB_PLUGIN  the gdb plugin (default: ../plugins/gdb/kvm_gdb.py)
#   GDB             gdb to run (default: gdb)
set -euo pipefail
cd "$(dirname "$0")"
KVM_DBG="${KVM_DBG:-../.venv/bin/kvm-dbg}"
PLUGIN="${KVM_GDB_PLUGIN:-../plugins/gdb/kvm_gdb.py}"
GDB="${GDB:-gdb}"

mkdir -p work
for f in kernel vmcore.0; do
  if [ ! -f "work/$f" ] || [ "$f.gz" -nt "work/$f" ]; then
    gzip -dc "$f.gz" > "work/$f.tmp" && mv "work/$f.tmp" "work/$f"
  fi
done

echo "\$ kvm-dbg triage work/kernel work/vmcore.0"
"$KVM_DBG" triage work/kernel work/vmcore.0

# gdb, in batch mode: each command is echoed as "(gdb) COMMAND", then run.
cmds=(
  "kvm-open work/kernel work/vmcore.0"
  "info threads"
  "bt"
  "frame 7"
  "p/x *(struct trapframe *)\$rsp"
  "frame 8"
  "info registers rip rsp rbp rdi"
  "print panicstr"
  "set \$p = allproc.lh_first"
  "print \$p->p_comm"
  "print \$p->p_pptr->p_comm"
  "set \$td = \$p->p_threads.tqh_first"
  "set print pretty on"
  "print *\$td"
  "print \$td->td_proc->p_pid"
  "print *msgbufp"
  "ptype struct msgbuf"
  "kvm-ps"
  "thread 5"
  "bt"
)
args=(-batch -nx -ex "set osabi none" -ex "source $PLUGIN")
for c in "${cmds[@]}"; do
  args+=(-ex "echo \\n(gdb) ${c//\\/\\\\}\\n" -ex "$c")
done
echo
echo "\$ gdb -batch -ex 'source plugins/gdb/kvm_gdb.py' -ex ...   # (gdb) commands below"
"$GDB" "${args[@]}" 2>&1
