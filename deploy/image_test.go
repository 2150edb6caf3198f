package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// maxImageBytes bounds the image: the static binary and the CA bundle.
const maxImageBytes = 40 << 20

// TestImage builds the container image with make image and checks, without
// running a container (this machine refuses to), its user, entrypoint,
// ports and size (podman image inspect) and its files (podman save): a
// static binary, the CA certificates, a config that caproxy -check accepts.
func TestImage(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman not installed (Debian: apt-get install podman): the image is not built")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed: make image is not run")
	}
	if out, err := exec.Command(podman, "info").CombinedOutput(); err != nil {
		t.Skipf("podman cannot run on this machine, so the image is not built: podman info: %v\n%s", err, out)
	}
	tag := fmt.Sprintf("localhost/caproxy-test:%d", rand.Uint32())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-C", "..", "image", "IMAGE="+tag)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", tag).Run() })

	out, err := exec.CommandContext(ctx, podman, "image", "inspect", tag).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	var inspect []struct {
		Size   int64
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			ExposedPorts map[string]any
		}
	}
	if err := json.Unmarshal(out, &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	img := inspect[0]
	if img.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (numeric, non-root)", img.Config.User)
	}
	if !slices.Equal(img.Config.Entrypoint, []string{"/caproxy"}) {
		t.Errorf("entrypoint %q, want [/caproxy]", img.Config.Entrypoint)
	}
	if !slices.Equal(img.Config.Cmd, []string{"-config", "/etc/caproxy/config.yaml"}) {
		t.Errorf("cmd %q", img.Config.Cmd)
	}
	for _, p := range []string{"8080/tcp", "9090/tcp"} {
		if _, ok := img.Config.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed (%v)", p, img.Config.ExposedPorts)
		}
	}
	if img.Size <= 0 || img.Size > maxImageBytes {
		t.Errorf("image is %d bytes, want at most %d", img.Size, maxImageBytes)
	}
	t.Logf("image %s: %d bytes, user %s, entrypoint %q", tag, img.Size, img.Config.User, img.Config.Entrypoint)

	files := imageFiles(t, ctx, podman, tag)
	bin, ok := files["caproxy"]
	if !ok {
		t.Fatalf("no /caproxy in the image (files: %v)", keys(files))
	}
	f, err := elf.NewFile(bytes.NewReader(bin.data))
	if err != nil {
		t.Fatalf("/caproxy: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("/caproxy is dynamically linked: FROM scratch has no libc")
		}
	}
	if certs := files["etc/ssl/certs/ca-certificates.crt"]; !bytes.Contains(certs.data, []byte("BEGIN CERTIFICATE")) {
		t.Error("the image has no CA certificates at /etc/ssl/certs/ca-certificates.crt")
	}
	if st, ok := files["var/lib/caproxy/"]; !ok || st.uid != 65532 {
		t.Errorf("/var/lib/caproxy missing or not owned by 65532 (%+v)", st.uid)
	}
	// The image's binary and config, run outside a container: the config
	// must pass -check once the admin token is given.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "caproxy"), bin.data, 0o755)
	cfg := files["etc/caproxy/config.yaml"].data
	// The state directory is the image's /var/lib/caproxy, which this host
	// does not have: -check (which checks it is writable) gets a temp dir.
	if !bytes.Contains(cfg, []byte("  dir: /var/lib/caproxy\n")) {
		t.Error("the image's config does not keep its state in /var/lib/caproxy")
	}
	stateDir := t.TempDir()
	cfg = bytes.Replace(cfg, []byte("  dir: /var/lib/caproxy\n"), []byte("  dir: "+stateDir+"\n"), 1)
	os.WriteFile(filepath.Join(dir, "config.yaml"), cfg, 0o600)
	chk := exec.CommandContext(ctx, filepath.Join(dir, "caproxy"), "-config", filepath.Join(dir, "config.yaml"), "-check")
	chk.Env = append(os.Environ(), "CAPROXY_ADMIN_TOKEN=image-test-admin-token")
	if out, err := chk.CombinedOutput(); err != nil {
		t.Errorf("the image's caproxy -check on its config: %v\n%s", err, out)
	}
	if !strings.Contains(string(files["etc/caproxy/config.yaml"].data), "admin_listen: 0.0.0.0:9090") {
		t.Error("the image's config keeps the admin listener on the container's loopback")
	}
}

type imageFile struct {
	data []byte
	uid  int
}

// imageFiles reads the files of tag's layers from podman save.
func imageFiles(t *testing.T, ctx context.Context, podman, tag string) map[string]imageFile {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	if out, err := exec.CommandContext(ctx, podman, "save", "-q", "--format", "docker-archive", "-o", archive, tag).CombinedOutput(); err != nil {
		t.Fatalf("podman save: %v\n%s", err, out)
	}
	outer := readTar(t, archive)
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(outer["manifest.json"].data, &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v", err)
	}
	files := map[string]imageFile{}
	for _, l := range manifest[0].Layers {
		layer := filepath.Join(t.TempDir(), "layer.tar")
		os.WriteFile(layer, outer[l].data, 0o600)
		for name, f := range readTar(t, layer) {
			files[strings.TrimPrefix(name, "./")] = f
		}
	}
	return files
}

func readTar(t *testing.T, path string) map[string]imageFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]imageFile{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		data, _ := io.ReadAll(tr)
		out[h.Name] = imageFile{data: data, uid: h.Uid}
	}
}

func keys(m map[string]imageFile) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// finalStage is the instructions after a Containerfile's last FROM,
// comments dropped, each COPY reduced to its options and destination (the
// two files copy from different places).
func finalStage(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, "FROM "):
			out = []string{strings.Fields(line)[1]}
			continue
		case strings.HasPrefix(line, "COPY "):
			f := strings.Fields(line)[1:]
			var opts []string
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if !strings.HasPrefix(f[0], "--from=") {
					opts = append(opts, f[0])
				}
				f = f[1:]
			}
			line = strings.Join(append(append([]string{"COPY"}, opts...), f[len(f)-1]), " ")
		}
		out = append(out, line)
	}
	return out
}

// TestDockerfileMatchesImage: the multi-stage Dockerfile (for builders with
// a registry) ends in the same image as the tested make image.
func TestDockerfileMatchesImage(t *testing.T) {
	tested := finalStage(t, filepath.Join("image", "Containerfile"))
	docker := finalStage(t, filepath.Join("..", "Dockerfile"))
	if !slices.Equal(tested, docker) {
		t.Errorf("Dockerfile's final stage differs from deploy/image/Containerfile:\n  %q\n  %q", docker, tested)
	}
	if len(tested) == 0 || tested[0] != "scratch" {
		t.Errorf("final stage from %q, want scratch", tested)
	}
}
