package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/portfwd"
	"github.com/bangerhq/banger/internal/store"
)

// Port forwards: recorded with the VM (store.Forward), listened on by the
// daemon (portfwd.Manager) while the VM runs: from the end of every start,
// and again after a daemon restart (Recover); closed when it stops. Each
// connection opens a stream to the guest agent, which connects to the
// guest's 127.0.0.1.

// Forward adds (or with p.Remove removes) a port forward of VM p.Name and
// returns the VM. A new forward of a running VM listens at once; one of a
// stopped VM listens from its next start. A host port something else
// holds, or another VM's forward has, is refused and nothing is recorded.
func (s *Service) Forward(ctx context.Context, p api.VMForwardParams) (api.VM, error) {
	spec, err := portfwd.ParseSpec(p.Spec)
	if err != nil {
		return api.VM{}, api.Errorf(api.ErrInvalid, "%v", err)
	}
	row, unlock, err := s.getLocked(ctx, p.Name, "")
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	if p.Remove {
		if err := store.DeleteForward(ctx, s.store.DB, row.ID, spec.String()); err != nil {
			if isNotFound(err) {
				return api.VM{}, api.Errorf(api.ErrNotFound, "VM %q has no forward %s: `banger vm forward %s` lists its forwards", row.Name, spec, row.Name)
			}
			return api.VM{}, err
		}
		s.fwd.Close(row.ID, spec)
		s.setForwardError(row.ID, spec, "")
		s.log.Info("forward removed", "vm", row.Name, "forward", spec.String())
		unlock()
		return s.viewFull(ctx, row)
	}
	if err := s.insertForwards(ctx, s.store.DB, row.ID, []portfwd.Spec{spec}); err != nil {
		return api.VM{}, err
	}
	if f, _ := s.facts(row); DeriveState(f) == api.StateRunning {
		err = s.fwd.Open(row.ID, spec, s.forwardDialer(row.ID))
	} else {
		err = portfwd.CheckFree(spec)
	}
	if err != nil {
		if derr := store.DeleteForward(context.WithoutCancel(ctx), s.store.DB, row.ID, spec.String()); derr != nil {
			err = errors.Join(err, derr)
		}
		return api.VM{}, api.Errorf(api.ErrPrecondition, "VM %q: forward %s: %v", row.Name, spec, err)
	}
	s.log.Info("forward added", "vm", row.Name, "forward", spec.String())
	unlock()
	return s.viewFull(ctx, row)
}

// parsePublish parses vm create's --publish specs and checks that their
// host ports are free now; it refuses one host side given twice.
func parsePublish(texts []string) ([]portfwd.Spec, error) {
	var specs []portfwd.Spec
	for _, t := range texts {
		sp, err := portfwd.ParseSpec(t)
		if err != nil {
			return nil, api.Errorf(api.ErrInvalid, "--publish: %v", err)
		}
		if slices.ContainsFunc(specs, func(o portfwd.Spec) bool { return sameHostSide(o, sp) }) {
			return nil, api.Errorf(api.ErrInvalid, "--publish %s: host port %s/%s is given twice", t, sp.HostAddrPort(), sp.Proto)
		}
		if err := portfwd.CheckFree(sp); err != nil {
			return nil, api.Errorf(api.ErrPrecondition, "--publish %s: %v", t, err)
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

func sameHostSide(a, b portfwd.Spec) bool {
	return a.HostAddr == b.HostAddr && a.HostPort == b.HostPort && a.Proto == b.Proto
}

// insertForwards records specs for VM id; a host side another forward has
// is ErrExists, naming the VM that has it.
func (s *Service) insertForwards(ctx context.Context, q store.Querier, id string, specs []portfwd.Spec) error {
	for _, sp := range specs {
		f := store.Forward{VMID: id, Spec: sp.String(), HostAddr: sp.HostAddr.String(), HostPort: sp.HostPort, GuestPort: sp.GuestPort, Proto: sp.Proto}
		err := store.InsertForward(ctx, q, &f)
		if errors.Is(err, store.ErrExists) {
			return api.Errorf(api.ErrExists, "host port %s/%s is forwarded already%s: remove that forward first (`banger vm forward --rm VM SPEC`)",
				sp.HostAddrPort(), sp.Proto, s.forwardOwner(ctx, q, sp))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// forwardOwner names the VM that forwards sp's host side: ` (by VM "x")`.
func (s *Service) forwardOwner(ctx context.Context, q store.Querier, sp portfwd.Spec) string {
	all, err := store.ListForwards(ctx, q, "")
	if err != nil {
		return ""
	}
	for _, f := range all {
		if o, err := portfwd.ParseSpec(f.Spec); err == nil && sameHostSide(o, sp) {
			if row, err := store.GetVM(ctx, q, f.VMID); err == nil {
				return fmt.Sprintf(" (by VM %q, as %s)", row.Name, f.Spec)
			}
		}
	}
	return ""
}

// forwardDialer opens forward streams to the agent of VM id.
func (s *Service) forwardDialer(id string) portfwd.Dialer {
	return func(ctx context.Context, p portfwd.Params) (net.Conn, error) {
		return s.OpenAgentStream(ctx, id, portfwd.Op, p, nil)
	}
}

// openForwards listens on the forwards of the running VM row. One whose
// host port is taken is logged and shown in `vm show`; the others work.
func (s *Service) openForwards(ctx context.Context, row store.VM) {
	rows, err := store.ListForwards(context.WithoutCancel(ctx), s.store.DB, row.ID)
	if err != nil {
		s.log.Warn("read the forwards of a vm", "vm", row.Name, "err", err)
		return
	}
	for _, f := range rows {
		sp, err := portfwd.ParseSpec(f.Spec)
		if err == nil {
			err = s.fwd.Open(row.ID, sp, s.forwardDialer(row.ID))
		}
		if err != nil {
			s.log.Warn("cannot forward", "vm", row.Name, "forward", f.Spec, "err", err)
			s.setForwardError(row.ID, sp, err.Error())
			continue
		}
		s.setForwardError(row.ID, sp, "")
	}
}

// closeForwards stops listening on the forwards of VM id (it stops).
func (s *Service) closeForwards(id string) {
	s.fwd.CloseVM(id)
	s.mu.Lock()
	delete(s.fwdErrs, id)
	s.mu.Unlock()
}

func (s *Service) setForwardError(id string, sp portfwd.Spec, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg == "" {
		delete(s.fwdErrs[id], sp.String())
		return
	}
	if s.fwdErrs == nil {
		s.fwdErrs = map[string]map[string]string{}
	}
	if s.fwdErrs[id] == nil {
		s.fwdErrs[id] = map[string]string{}
	}
	s.fwdErrs[id][sp.String()] = msg
}

// forwardViews is what users see of the forwards rows of VM id.
func (s *Service) forwardViews(id string, rows []store.Forward) []api.Forward {
	var out []api.Forward
	for _, f := range rows {
		v := api.Forward{Spec: f.Spec}
		if sp, err := portfwd.ParseSpec(f.Spec); err == nil {
			v.Active = s.fwd.IsOpen(id, sp)
		}
		s.mu.Lock()
		v.Error = s.fwdErrs[id][f.Spec]
		s.mu.Unlock()
		out = append(out, v)
	}
	return out
}

// viewFull is view with the VM's forwards.
func (s *Service) viewFull(ctx context.Context, row store.VM) (api.VM, error) {
	v := s.view(row)
	rows, err := store.ListForwards(ctx, s.store.DB, row.ID)
	if err != nil {
		return v, err
	}
	v.Forwards = s.forwardViews(row.ID, rows)
	ms, err := store.ListMounts(ctx, s.store.DB, row.ID)
	if err != nil {
		return v, err
	}
	v.Mounts = mountViews(ms)
	return v, nil
}
