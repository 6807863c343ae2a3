-- A vsock context id is the guest's own address, not the host's: under
-- Firecracker's hybrid vsock the host reaches each guest through a Unix
-- socket in the VM's folder, and clones of one warm template all keep the
-- template's CID (a snapshot load cannot change it). So CIDs may repeat.
DROP INDEX vms_vsock_cid;
