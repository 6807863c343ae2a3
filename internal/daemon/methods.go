package daemon

import (
	"context"
	"errors"

	"github.com/bangerhq/banger/internal/api"
)

type empty struct{}

// methods builds the daemon's method table.
func (d *Daemon) methods() *Methods {
	t := &Methods{}
	t.Register(api.MethodDaemonStatus, Typed(d.status))
	t.Register(api.MethodDaemonInfo, Typed(func(ctx context.Context, _ empty) (api.DaemonInfo, error) {
		return d.info, nil
	}))
	t.Register(api.MethodDaemonStop, Typed(func(ctx context.Context, _ empty) (empty, error) {
		// Answer first, then stop: the client learns the stop was taken.
		afterResponse(ctx, d.requestStop)
		return empty{}, nil
	}))
	t.Register(api.MethodVMCreate, Typed(d.vms.Create))
	t.Register(api.MethodVMList, Typed(func(ctx context.Context, _ empty) (api.VMList, error) {
		vms, err := d.vms.List(ctx)
		return api.VMList{VMs: vms}, err
	}))
	t.Register(api.MethodVMGet, Typed(func(ctx context.Context, p api.VMRef) (api.VM, error) {
		return d.vms.Get(ctx, p.Name)
	}))
	t.Register(api.MethodVMStart, Typed(func(ctx context.Context, p api.VMRef) (api.VM, error) {
		return d.vms.Start(ctx, p.Name)
	}))
	t.Register(api.MethodVMStop, Typed(func(ctx context.Context, p api.VMStopParams) (api.VM, error) {
		return d.vms.Stop(ctx, p.Name, p.Force)
	}))
	t.Register(api.MethodVMRestart, Typed(func(ctx context.Context, p api.VMRef) (api.VM, error) {
		return d.vms.Restart(ctx, p.Name)
	}))
	t.Register(api.MethodVMPause, Typed(func(ctx context.Context, p api.VMRef) (api.VM, error) {
		return d.vms.Pause(ctx, p.Name)
	}))
	t.Register(api.MethodVMResume, Typed(func(ctx context.Context, p api.VMRef) (api.VM, error) {
		return d.vms.Resume(ctx, p.Name)
	}))
	t.Register(api.MethodVMDelete, Typed(func(ctx context.Context, p api.VMStopParams) (empty, error) {
		return empty{}, d.vms.Delete(ctx, p.Name, p.Force)
	}))
	t.Register(api.MethodVMSSHInfo, Typed(func(ctx context.Context, p api.VMRef) (api.SSHInfo, error) {
		return d.vms.SSHInfo(ctx, p.Name)
	}))
	t.Register(api.MethodVMPing, Typed(d.vms.Ping))
	t.Register(api.MethodVMForward, Typed(d.vms.Forward))
	t.Register(api.MethodVMMount, Typed(d.vms.Mount))
	t.Register(api.MethodSSHConfig, Typed(func(ctx context.Context, _ empty) (api.SSHConfig, error) {
		text, path, err := d.vms.SSHConfig(ctx)
		return api.SSHConfig{Text: text, Path: path}, err
	}))
	t.RegisterStream(api.MethodVMExec, Typed(d.exec))
	t.RegisterStream(api.MethodVMCopyIn, Typed(d.copyIn))
	t.RegisterStream(api.MethodVMCopyOut, Typed(d.copyOut))
	t.Register(api.MethodImageBuild, Typed(d.images.Build))
	t.Register(api.MethodImageList, Typed(func(ctx context.Context, _ empty) (api.ImageList, error) {
		ims, err := d.images.List(ctx)
		return api.ImageList{Images: ims}, err
	}))
	t.Register(api.MethodImageGet, Typed(func(ctx context.Context, p api.VMRef) (api.Image, error) {
		im, err := d.images.Get(ctx, p.Name)
		if err == nil {
			im.Templates = d.vms.Templates(im.ID)
		}
		return im, err
	}))
	t.Register(api.MethodImageDelete, Typed(func(ctx context.Context, p api.ImageDeleteParams) (api.Image, error) {
		im, err := d.images.Delete(ctx, p)
		if im.ID != "" {
			// A template is of no use without its image.
			err = errors.Join(err, d.vms.RemoveTemplates(im.ID))
		}
		return im, err
	}))
	t.Register(api.MethodImageWarm, Typed(d.vms.Warm))
	t.Register(api.MethodImageImport, Typed(d.images.Import))
	t.Register(api.MethodImageCheckAgent, Typed(func(ctx context.Context, _ empty) (api.CheckResult, error) {
		return d.images.CheckAgent(ctx)
	}))
	return t
}

func (d *Daemon) status(ctx context.Context, _ empty) (api.DaemonStatus, error) {
	total, running := d.vms.Counts(ctx)
	dnsAddr, dnsErr, resolved := d.names.status()
	return api.DaemonStatus{
		DNS: dnsAddr, DNSError: dnsErr, DNSResolved: resolved,
		DaemonInfo: d.info, StartedAt: d.started, Socket: d.dirs.Socket(),
		StateDir: d.dirs.State, RuntimeDir: d.runtime.Path,
		Bridge: d.net.policy.Bridge, Subnet: d.net.policy.Subnet.String(),
		VMs: total, Running: running,
	}, nil
}
