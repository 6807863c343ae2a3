-- Images: bootable root filesystems.
CREATE TABLE images (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL,
    path           TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    kernel_release TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL
);

-- VMs: persistent objects. Observed status is derived, never stored here.
CREATE TABLE vms (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    image_id      TEXT NOT NULL REFERENCES images(id),
    cpus          INTEGER NOT NULL,
    memory_mib    INTEGER NOT NULL,
    disk_bytes    INTEGER NOT NULL,
    kernel        TEXT NOT NULL,
    initrd        TEXT NOT NULL DEFAULT '',
    kernel_args   TEXT NOT NULL,
    mac           TEXT NOT NULL UNIQUE,
    vmm           TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    driver_state  TEXT NOT NULL DEFAULT '',
    last_error    TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT NOT NULL DEFAULT ''
);

-- IP leases: one address per VM for the VM's whole life.
CREATE TABLE leases (
    ip    TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE
);

-- Settings chosen once and kept stable (for example the subnet).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
