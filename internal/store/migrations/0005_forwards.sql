-- Port forwards of VMs (`banger vm forward`, `vm create --publish`): host
-- address and port to a port of the guest's 127.0.0.1, through the guest
-- agent. They live with the VM and are listened on while it runs.
--   spec       the canonical form, HOST_ADDR:HOST_PORT:GUEST_PORT/PROTO
--   host_addr, host_port, proto: the host side, unique (one forward per
--              host address, port and protocol among all VMs)
--   guest_port the port on the guest's 127.0.0.1
CREATE TABLE forwards (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    spec       TEXT NOT NULL,
    host_addr  TEXT NOT NULL,
    host_port  INTEGER NOT NULL,
    guest_port INTEGER NOT NULL,
    proto      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (host_addr, host_port, proto)
);
CREATE INDEX forwards_vm ON forwards(vm_id);
