-- A vsock context id per VM (0 = no vsock device). Unique among this user's
-- VMs when set, so the daemon can address each guest on its own.
ALTER TABLE vms ADD COLUMN vsock_cid INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX vms_vsock_cid ON vms(vsock_cid) WHERE vsock_cid > 0;
