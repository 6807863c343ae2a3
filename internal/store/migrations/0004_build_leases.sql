-- Addresses of the VM subnet lent to image build sandboxes (the address of
-- their veth on the bridge, for package downloads), so that a VM and a build
-- never share one: LeasedIPs lists both tables. A row lives while its build
-- runs; the daemon's start-up sweep removes what a dead daemon left.
--   ip     the address
--   owner  what holds it: "build:" and the image name
CREATE TABLE build_leases (
    ip    TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
