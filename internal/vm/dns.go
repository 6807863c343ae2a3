package vm

import (
	"context"
	"net/netip"

	"github.com/bangerhq/banger/internal/store"
)

// Names answers the DNS server's questions (vmdns.Lookup) from the store,
// at every question: a VM resolves from its creation (its address is
// leased for its whole life, so also while it is stopped) until the
// moment its row is deleted.
type Names struct{ s *Service }

// Names returns the service's vmdns.Lookup.
func (s *Service) Names() Names { return Names{s} }

// LookupName returns the address of the VM called name.
func (n Names) LookupName(ctx context.Context, name string) (netip.Addr, bool, error) {
	ip, err := store.VMAddrByName(ctx, n.s.store.DB, name)
	if isNotFound(err) {
		return netip.Addr{}, false, nil
	}
	if err != nil {
		return netip.Addr{}, false, err
	}
	a, err := netip.ParseAddr(ip)
	return a, err == nil, nil
}

// LookupAddr returns the name of the VM that holds addr.
func (n Names) LookupAddr(ctx context.Context, addr netip.Addr) (string, bool, error) {
	name, err := store.VMNameByAddr(ctx, n.s.store.DB, addr.String())
	if isNotFound(err) {
		return "", false, nil
	}
	return name, err == nil, err
}
