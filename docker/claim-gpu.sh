#!/usr/bin/env bash
# Run a command on one GPU of this host that no other worker holds: `claim-gpu.sh jobs worker ...`.
#
# Docker Compose gives every replica of a service the same devices (`count: 1` is the first GPU for all
# of them), so `docker compose up --scale worker=N` would stack N workers on GPU 0. Instead each replica
# sees all GPUs and takes the first free one by holding a lock file in a volume the replicas share; the
# lock lives as long as the process that inherits it, so a GPU frees itself when its worker stops or dies.
set -euo pipefail

if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  exec "$@"  # pinned by hand (e.g. one worker per GPU class on a mixed box)
fi

lock_dir=${GPU_LOCK_DIR:-/locks}
mkdir -p "$lock_dir"
count=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
if [ "$count" -eq 0 ]; then
  echo "claim-gpu: no GPU visible (is the NVIDIA Container Toolkit installed?); set CUDA_VISIBLE_DEVICES to override" >&2
  exit 1
fi

for ((gpu = 0; gpu < count; gpu++)); do
  exec 9>"$lock_dir/gpu$gpu.lock"
  if flock --nonblock 9; then
    echo "claim-gpu: this worker uses GPU $gpu of $count" >&2
    # PCI bus order, so that the index means the same GPU here, in nvidia-smi and in the lock file name.
    export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpu
    exec "$@"
  fi
  exec 9>&-
done
echo "claim-gpu: all $count GPUs of this host already have a worker; scale down to $count workers" >&2
exit 1
