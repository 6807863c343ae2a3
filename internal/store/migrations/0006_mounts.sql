-- Shared folders of VMs (`vm create --mount`, `vm mount`): a host folder
-- mounted in the guest through virtio-fs.
--   idx        the share's number in the VM, its virtio-fs tag "bangerIDX"
--   host_dir   the host folder, absolute
--   guest_dir  where the guest mounts it, absolute; one share per folder
--   read_only  1: the guest cannot write to it
CREATE TABLE mounts (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    host_dir   TEXT NOT NULL,
    guest_dir  TEXT NOT NULL,
    read_only  INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (vm_id, idx),
    UNIQUE (vm_id, guest_dir)
);
