package hostcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/paths"
)

// runtimeOpts are the flags shared by the `banger runtime` subcommands.
type runtimeOpts struct {
	dir      string // --dir: the bundle directory instead of the resolved one
	manifest string // --manifest: runtime-bundle.toml instead of the default search
}

// newRuntimeCmd returns `banger runtime`: fetch, verify, status, package,
// install and lock the runtime bundle (VMM binaries, guest kernel, modules,
// guest agent). None of them needs the daemon.
func newRuntimeCmd() *cobra.Command {
	o := &runtimeOpts{}
	cmd := &cobra.Command{
		Use:   "runtime",
		Short: "Fetch, verify, package and install the runtime bundle",
		Long: "The runtime bundle holds what banger runs but never keeps in git: Firecracker, the guest kernel, " +
			"its initramfs and modules, and the guest agent. It lives in ./runtime in a source checkout and in " +
			"PREFIX/lib/banger beside an installed bin/banger; $BANGER_RUNTIME_DIR or runtime.dir in config.toml " +
			"override both. runtime-bundle.toml says what it holds; bundle.lock.toml inside it records every file's SHA-256.",
	}
	cmd.PersistentFlags().StringVar(&o.dir, "dir", "", "runtime bundle directory (default: resolved as banger does)")
	cmd.PersistentFlags().StringVar(&o.manifest, "manifest", "", "runtime-bundle.toml to use (default: the one beside the bundle directory, else the bundle's copy)")
	cmd.AddCommand(newRuntimeStatusCmd(o), newRuntimeVerifyCmd(o), newRuntimeFetchCmd(o),
		newRuntimePackageCmd(o), newRuntimeInstallCmd(o), newRuntimeLockCmd(o))
	return cmd
}

// resolve returns the bundle directory the command works on.
func (o *runtimeOpts) resolve() (bundle.Dir, error) {
	if o.dir != "" {
		p, err := filepath.Abs(o.dir)
		if err != nil {
			return bundle.Dir{}, err
		}
		return bundle.Dir{Path: p, How: "--dir", Searched: []string{p}}, nil
	}
	dirs, err := paths.Resolve()
	if err != nil {
		return bundle.Dir{}, fmt.Errorf("runtime: %w", err)
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return bundle.Dir{}, fmt.Errorf("runtime: %w", err)
	}
	return bundle.Resolve(cfg.Runtime.Dir), nil
}

// loadManifest finds runtime-bundle.toml: --manifest, the bundle's own
// copy, or the one beside the bundle (a checkout's ./runtime-bundle.toml).
// inspect resolves the bundle and inspects every file of it (no cached
// hashes).
func (o *runtimeOpts) inspect(ctx context.Context) (bundle.Dir, *bundle.Report, error) {
	d, err := o.resolve()
	if err != nil {
		return d, nil, err
	}
	r, err := bundle.Inspect(ctx, d, bundle.InspectOptions{NoCache: true})
	return d, r, err
}

func (o *runtimeOpts) loadManifest(d bundle.Dir) (*bundle.Manifest, string, error) {
	cands := []string{o.manifest}
	if o.manifest == "" {
		// A checkout's manifest beside ./runtime wins over the bundle's
		// copy, which may be older.
		cands = []string{filepath.Join(filepath.Dir(d.Path), bundle.ManifestName), filepath.Join(d.Path, bundle.ManifestName)}
	}
	for _, p := range cands {
		if _, err := os.Stat(p); err != nil && o.manifest == "" {
			continue
		}
		m, err := bundle.LoadManifest(p)
		return m, p, err
	}
	return nil, "", fmt.Errorf("no %s in %s: pass --manifest (it is at the root of the banger repository)", bundle.ManifestName, strings.Join(cands, " or "))
}

func newRuntimeStatusCmd(o *runtimeOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show which components are present, missing or wrong, and where banger looked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, r, err := o.inspect(cmd.Context())
			if err != nil {
				return err
			}
			m, mpath, merr := o.loadManifest(d)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "runtime bundle: %s (found via %s)\n", d.Path, d.How)
			if len(d.Searched) > 0 {
				fmt.Fprintf(out, "searched:       %s\n", strings.Join(d.Searched, ", "))
			}
			if merr == nil {
				fmt.Fprintf(out, "manifest:       %s (bundle version %s)\n", mpath, m.Version)
			} else {
				fmt.Fprintf(out, "manifest:       %v\n", merr)
			}
			if r.LockErr != nil {
				fmt.Fprintf(out, "lock:           %v\n", r.LockErr)
			} else {
				fmt.Fprintf(out, "lock:           %s (bundle version %s)\n", filepath.Join(d.Path, bundle.LockName), r.Lock.BundleVersion)
			}
			fmt.Fprintln(out)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COMPONENT\tSTATE\tVERSION\tFILES\tTRUST\tFIX")
			for _, c := range r.Components {
				state, version, trust, nfiles := c.State, "-", "-", "-"
				if c.Optional && c.State == bundle.StateMissing {
					state += " (optional)"
				}
				if r.LockErr != nil {
					state = "unknown (no lock)"
				}
				if c.Lock != nil {
					version = c.Lock.Version
					nfiles = fmt.Sprint(len(c.Lock.Files))
					trust = trustOf(c.Lock)
				}
				var mc *bundle.Component
				if m != nil {
					mc = m.Components[c.Name]
				}
				if mc != nil && c.Lock != nil && c.Lock.Version != mc.Version {
					version += " (manifest: " + mc.Version + ")"
				}
				if c.Lock == nil && mc != nil {
					trust = "(" + trustOfManifest(mc) + ")"
				}
				fix := "-"
				if c.State != bundle.StatePresent || len(c.Problems) > 0 {
					switch {
					case c.Lock != nil:
						fix = c.Lock.Fix
					case mc != nil:
						fix = mc.FixCommand()
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, state, version, nfiles, trust, fix)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, c := range r.Components {
				for _, p := range c.Problems {
					fmt.Fprintln(out, "  "+p.String())
				}
			}
			for _, p := range r.Extra {
				fmt.Fprintln(out, "  "+p.String())
			}
			return nil
		},
	}
}

// trustOf says how a locked component's contents were established.
func trustOf(lc *bundle.LockComponent) string {
	switch lc.Verified {
	case bundle.VerifiedPinned:
		return "pinned SHA-256"
	case bundle.VerifiedPublished:
		return "published checksum only (not pinned)"
	case bundle.VerifiedBuilt:
		return "built here (hashes recorded at build)"
	}
	return lc.Verified
}

// trustOfManifest says how a component would be verified when fetched.
func trustOfManifest(c *bundle.Component) string {
	switch {
	case c.Kind == bundle.KindDownload && c.Pinned():
		return "would be pinned"
	case c.Kind == bundle.KindDownload:
		return "would use the published checksum"
	}
	return "would be built here"
}

func newRuntimeVerifyCmd(o *runtimeOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check every file of the runtime bundle against its lock",
		Long: "verify hashes every file in the bundle and compares it with bundle.lock.toml; a missing, changed or " +
			"truncated file, or an unexpected executable, fails with the component, the file, the expected and actual " +
			"SHA-256 and the command that fixes it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, r, err := o.inspect(cmd.Context())
			if err != nil {
				return err
			}
			if err := r.Err(); err != nil {
				return err
			}
			n := 0
			for _, c := range r.Components {
				if c.Lock != nil {
					n += len(c.Lock.Files)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "runtime bundle %s (found via %s): %d files verify\n", d.Path, d.How, n)
			return nil
		},
	}
}

// fetcher returns a Fetcher printing progress to cmd's stderr.
func fetcher(cmd *cobra.Command) *bundle.Fetcher {
	w := cmd.ErrOrStderr()
	f := &bundle.Fetcher{Progress: w}
	if fh, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(fh.Fd()), unix.TCGETS)
		f.Terminal = err == nil
	}
	return f
}

func newRuntimeFetchCmd(o *runtimeOpts) *cobra.Command {
	var bundleURL, sha string
	cmd := &cobra.Command{
		Use:               "fetch [COMPONENT...]",
		ValidArgsFunction: cobra.FixedCompletions(bundle.KnownComponents, cobra.ShellCompDirectiveNoFileComp),
		Short:             "Download components (or a whole bundle) and verify them",
		Long: "fetch downloads the manifest's download components (default: all of them; today Firecracker) into " +
			"$XDG_CACHE_HOME/banger/downloads, verifies each archive against its pinned SHA-256 or, when none is " +
			"pinned, the release's published checksum file, and puts its files into the bundle atomically. An " +
			"interrupted download resumes next time.\n\nWith --bundle URL it downloads a bundle tarball (checked " +
			"against URL.sha256 or --sha256) and installs it into the bundle directory.",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := o.resolve()
			if err != nil {
				return err
			}
			f := fetcher(cmd)
			if bundleURL != "" {
				if len(args) > 0 {
					return errors.New("fetch: give components or --bundle, not both")
				}
				p, sum, err := f.FetchBundle(cmd.Context(), bundleURL, sha)
				if err != nil {
					return err
				}
				if err := bundle.Install(cmd.Context(), p, d.Path, sum); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "installed %s into %s\n", bundleURL, d.Path)
				return nil
			}
			m, _, err := o.loadManifest(d)
			if err != nil {
				return err
			}
			names := args
			if len(names) == 0 {
				for _, c := range m.Sorted() {
					if c.Kind == bundle.KindDownload {
						names = append(names, c.Name)
					}
				}
			}
			var errs []error
			for _, n := range names {
				lc, err := f.FetchComponent(cmd.Context(), d.Path, m, n)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %d files into %s (%s)\n", n, lc.Version, len(lc.Files), d.Path, trustOf(lc))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&bundleURL, "bundle", "", "download and install a bundle tarball from this URL")
	cmd.Flags().StringVar(&sha, "sha256", "", "expected SHA-256 of the --bundle tarball (default: read URL.sha256)")
	return cmd
}

func newRuntimePackageCmd(o *runtimeOpts) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "package",
		Short: "Write the verified bundle as a tarball plus its .sha256",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := o.resolve()
			if err != nil {
				return err
			}
			if out == "" {
				l, err := bundle.ReadLock(d.Path)
				if err != nil {
					return fmt.Errorf("package: %w: run `make runtime` first", err)
				}
				out = "banger-runtime-" + l.BundleVersion + ".tar.gz"
			}
			sum, err := bundle.Package(cmd.Context(), d, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s  %s\n", out, sum, out+".sha256")
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "tarball to write (default banger-runtime-VERSION.tar.gz)")
	return cmd
}

func newRuntimeInstallCmd(o *runtimeOpts) *cobra.Command {
	var sha string
	cmd := &cobra.Command{
		Use:   "install TARBALL|URL",
		Short: "Unpack a bundle tarball into the runtime directory atomically",
		Long: "install checks the tarball against --sha256 or TARBALL.sha256, unpacks it into a temporary directory " +
			"beside the runtime directory, verifies it against the lock it carries, and only then swaps it into " +
			"place; an interrupted install leaves the old bundle intact. A URL is fetched first (see fetch --bundle).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := o.resolve()
			if err != nil {
				return err
			}
			src := args[0]
			if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
				p, sum, err := fetcher(cmd).FetchBundle(cmd.Context(), src, sha)
				if err != nil {
					return err
				}
				src, sha = p, sum
			}
			if err := bundle.Install(cmd.Context(), src, d.Path, sha); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s into %s\n", args[0], d.Path)
			return nil
		},
	}
	cmd.Flags().StringVar(&sha, "sha256", "", "expected SHA-256 of the tarball (default: read TARBALL.sha256)")
	return cmd
}

func newRuntimeLockCmd(o *runtimeOpts) *cobra.Command {
	return &cobra.Command{
		Use:               "lock [COMPONENT...]",
		ValidArgsFunction: cobra.FixedCompletions(bundle.KnownComponents, cobra.ShellCompDirectiveNoFileComp),
		Short:             "Record the hashes of locally built components (make runtime runs this)",
		Long: "lock hashes the recipe and build components (kernel, agent) in the bundle directory and writes " +
			"bundle.lock.toml (and a copy of the manifest) there. Download components are locked by fetch.",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := o.resolve()
			if err != nil {
				return err
			}
			m, mpath, err := o.loadManifest(d)
			if err != nil {
				return err
			}
			return lockBundle(cmd.ErrOrStderr(), d.Path, m, mpath, args)
		},
	}
}

// lockBundle writes dir's lock for the given components (all when empty)
// and copies the manifest at mpath into dir, printing warnings to w.
func lockBundle(w io.Writer, dir string, m *bundle.Manifest, mpath string, only []string) error {
	return bundle.LockDir(dir, m, mpath, only, w, "banger runtime lock")
}
