package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/caproxy/caproxy/internal/redistest"
)

// envRef is a ${NAME} or ${NAME:-default} in a config.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// requiredEnv lists the variables config refers to without a default.
func requiredEnv(config string) []string {
	var out []string
	for _, m := range envRef.FindAllStringSubmatch(config, -1) {
		if m[2] == "" && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// checkConfig runs caproxy -check on config with env. The state directory
// (state.dir) is moved to a temporary directory, as it must exist. A
// binary that does not know state.dir yet (it comes with the persistent
// state work) checks the rest of the config.
func checkConfig(t *testing.T, config string, env []string) {
	t.Helper()
	dir := t.TempDir()
	config = regexp.MustCompile(`state: \{dir: [^}]*\}`).ReplaceAllString(config, "state: {dir: "+dir+"}")
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	out, ok := check(t, path, env...)
	if !ok && strings.Contains(out, "state") && strings.Contains(config, "state: {dir:") {
		t.Logf("this caproxy does not know state.dir yet (%s); checking the config without it", strings.TrimSpace(out))
		os.WriteFile(path, []byte(regexp.MustCompile(`(?m)^\s*state: \{dir: [^}]*\}\n`).ReplaceAllString(config, "")), 0o600)
		out, ok = check(t, path, env...)
	}
	if !ok {
		t.Fatalf("caproxy -check refuses the config: %s\n%s", out, config)
	}
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

type k8sObject struct {
	Kind       string                `yaml:"kind"`
	Metadata   struct{ Name string } `yaml:"metadata"`
	Data       map[string]string     `yaml:"data"`
	StringData map[string]string     `yaml:"stringData"`
	Spec       struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name  string   `yaml:"name"`
	Args  []string `yaml:"args"`
	Env   []envVar `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom struct {
		SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type podSpec struct {
	SecurityContext securityContext `yaml:"securityContext"`
	Containers      []container     `yaml:"containers"`
	Volumes         []struct {
		Name      string                 `yaml:"name"`
		ConfigMap *struct{ Name string } `yaml:"configMap"`
		EmptyDir  *map[string]any        `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

// caproxyConfig is the part of a caproxy config the examples are checked on.
type caproxyConfig struct {
	Listen      string `yaml:"listen"`
	AdminListen string `yaml:"admin_listen"`
	AdminToken  string `yaml:"admin_token"`
	State       struct {
		Dir string `yaml:"dir"`
	} `yaml:"state"`
	Redis struct {
		URL      string `yaml:"url"`
		Replicas int    `yaml:"replicas"`
	} `yaml:"redis"`
}

// TestKubernetesSidecar checks deploy/kubernetes/sidecar.yaml: caproxy's
// config comes from the ConfigMap (and passes caproxy -check), its secrets
// from the Secret, the probes hit the admin port, it runs as non-root on a
// read-only root file system with the state directory on an emptyDir.
func TestKubernetesSidecar(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("kubernetes", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("sidecar.yaml: %v", err)
		}
		objs[o.Kind] = o
	}
	cm, secret, deploy := objs["ConfigMap"], objs["Secret"], objs["Deployment"]
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no config.yaml")
	}
	var cfg caproxyConfig
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("ConfigMap config.yaml: %v", err)
	}
	pod := deploy.Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c container) bool {
		return c.Name == "caproxy"
	})
	if i < 0 {
		t.Fatal("the Deployment has no caproxy container")
	}
	c := pod.Containers[i]

	// Non-root, read-only root file system.
	sc := c.SecurityContext
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot)
	if !nonRoot {
		t.Error("caproxy may run as root: set runAsNonRoot")
	}
	for _, u := range []*int{sc.RunAsUser, pod.SecurityContext.RunAsUser} {
		if u != nil && *u == 0 {
			t.Error("runAsUser is 0")
		}
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("caproxy's root file system is writable: set readOnlyRootFilesystem")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}

	// Probes on the admin listener's port, not the proxy's.
	adminPort := port(t, cfg.AdminListen)
	if port(t, cfg.Listen) == adminPort {
		t.Fatal("listen and admin_listen share a port")
	}
	probePort := func(what string, p *probe) {
		if p == nil {
			t.Errorf("no %s probe", what)
			return
		}
		n, isNum := p.HTTPGet.Port.(int)
		if !isNum {
			name, _ := p.HTTPGet.Port.(string)
			for _, cp := range c.Ports {
				if cp.Name == name {
					n = cp.ContainerPort
				}
			}
		}
		if n != adminPort {
			t.Errorf("%s probe on port %v (%d), want the admin port %d", what, p.HTTPGet.Port, n, adminPort)
		}
	}
	probePort("readiness", c.ReadinessProbe)
	probePort("liveness", c.LivenessProbe)
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe on %s, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe on %s, want /healthz", c.LivenessProbe.HTTPGet.Path)
	}

	// The config file is the ConfigMap's, the state directory an emptyDir.
	volumeOf := func(mountPath string) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == mountPath || strings.HasPrefix(mountPath, m.MountPath+"/") {
				return m.Name
			}
		}
		return ""
	}
	ci := slices.Index(c.Args, "-config")
	if ci < 0 || ci+1 >= len(c.Args) {
		t.Fatalf("caproxy's args %q name no -config", c.Args)
	}
	configPath := c.Args[ci+1]
	if filepath.Base(configPath) != "config.yaml" {
		t.Errorf("-config %s is not the ConfigMap's key config.yaml", configPath)
	}
	if cfg.State.Dir == "" {
		t.Error("the config sets no state.dir: the default (beside the config) is the read-only ConfigMap")
	}
	for _, v := range pod.Volumes {
		switch v.Name {
		case volumeOf(configPath):
			if v.ConfigMap == nil || v.ConfigMap.Name != cm.Metadata.Name {
				t.Errorf("%s is not on the ConfigMap %s", configPath, cm.Metadata.Name)
			}
		case volumeOf(cfg.State.Dir):
			if v.EmptyDir == nil {
				t.Errorf("state.dir %s is not on an emptyDir", cfg.State.Dir)
			}
		}
	}
	if volumeOf(configPath) == "" || volumeOf(cfg.State.Dir) == "" {
		t.Errorf("no volume mounted at %s or %s", configPath, cfg.State.Dir)
	}

	// Every variable the config needs is set, the secret ones from the Secret.
	env := []string{}
	for _, name := range requiredEnv(text) {
		j := slices.IndexFunc(c.Env, func(e envVar) bool {
			return e.Name == name
		})
		if j < 0 {
			t.Errorf("the config needs %s; the container does not set it", name)
			continue
		}
		e := c.Env[j]
		value := e.Value
		if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
			if ref.Name != secret.Metadata.Name {
				t.Errorf("%s from Secret %s, not %s", name, ref.Name, secret.Metadata.Name)
			}
			var ok bool
			if value, ok = secret.StringData[ref.Key]; !ok {
				t.Errorf("the Secret has no %s", ref.Key)
			}
		} else if strings.Contains(name, "KEY") || strings.Contains(name, "TOKEN") {
			t.Errorf("%s is a literal in the manifest, not from the Secret", name)
		}
		env = append(env, name+"="+value)
	}
	if strings.Contains(text, "api_key:") && !strings.Contains(text, "api_key: ${") {
		t.Error("the ConfigMap holds an api_key itself")
	}
	checkConfig(t, text, env)
}

// TestCompose checks deploy/compose/compose.yaml and the config its
// replicas share, then runs that config as two caproxy processes on a real
// Redis (containers cannot run here) and sees them share one budget and
// one cache.
func TestCompose(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string         `yaml:"image"`
			Command     []string       `yaml:"command"`
			ReadOnly    bool           `yaml:"read_only"`
			User        string         `yaml:"user"`
			Environment map[string]any `yaml:"environment"`
			Volumes     []string       `yaml:"volumes"`
			DependsOn   map[string]any `yaml:"depends_on"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var replicas []string
	for name, s := range compose.Services {
		if strings.Contains(s.Image, "caproxy") {
			replicas = append(replicas, name)
		}
	}
	slices.Sort(replicas)
	if len(replicas) != 2 {
		t.Fatalf("compose.yaml runs %d caproxy services (%v), want 2", len(replicas), replicas)
	}
	configFile := ""
	for _, name := range replicas {
		s := compose.Services[name]
		if !s.ReadOnly {
			t.Errorf("%s: root file system writable (read_only: true)", name)
		}
		uid, _, _ := strings.Cut(s.User, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("%s: user %q is not a numeric non-root user", name, s.User)
		}
		ci := slices.Index(s.Command, "-config")
		if ci < 0 || ci+1 >= len(s.Command) {
			t.Fatalf("%s: command %q names no -config", name, s.Command)
		}
		for _, v := range s.Volumes {
			if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(dst, s.Command[ci+1]) {
				if configFile != "" && configFile != src {
					t.Errorf("the replicas read different configs: %s, %s", configFile, src)
				}
				configFile = src
			}
		}
		if _, ok := s.DependsOn["redis"]; !ok {
			t.Errorf("%s does not wait for redis", name)
		}
	}
	if configFile == "" {
		t.Fatal("no volume holds the replicas' -config")
	}
	text, err := os.ReadFile(filepath.Join("compose", configFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg caproxyConfig
	if err := yaml.Unmarshal(text, &cfg); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	if cfg.Redis.Replicas != len(replicas) {
		t.Errorf("redis.replicas %d, but compose runs %d", cfg.Redis.Replicas, len(replicas))
	}
	if !strings.Contains(cfg.Redis.URL, "//redis:") || compose.Services["redis"].Image == "" {
		t.Errorf("redis.url %s is not the compose service redis", cfg.Redis.URL)
	}
	env := []string{"CLOUDAGENT_USER=demo", "CLOUDAGENT_API_KEY=demo-key", "CAPROXY_ADMIN_TOKEN=compose-test-admin-token"}
	for _, name := range requiredEnv(string(text)) {
		if _, ok := compose.Services[replicas[0]].Environment[name]; !ok {
			t.Errorf("%s needs %s; compose does not pass it", configFile, name)
		}
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
			t.Fatalf("test sets no %s", name)
		}
	}
	checkConfig(t, string(text), env)

	// Run it: the same config, listeners and Redis moved to this machine's
	// loopback, the upstream the built-in simulator (CLOUDAGENT_URL).
	redis := redistest.Start(t)
	var procs []*caproxy
	for range replicas {
		proxyAddr, adminAddr := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
		local := strings.NewReplacer(
			"listen: "+cfg.Listen, "listen: "+proxyAddr,
			"admin_listen: "+cfg.AdminListen, "admin_listen: "+adminAddr,
			cfg.Redis.URL, "redis://"+redis,
		).Replace(string(text))
		path := filepath.Join(t.TempDir(), "config.yaml")
		os.WriteFile(path, []byte(local), 0o600)
		procs = append(procs, start(t, path, proxyAddr, adminAddr, "compose-test-admin-token", append(env, "CLOUDAGENT_URL=builtin:sim")...))
	}
	for _, agent := range []string{"agent001", "agent002", "agent003"} {
		if got := procs[0].aht(t, "demo", "demo-key", agent); got != "MISS" {
			t.Errorf("first ask for %s through replica 1: X-Cache %s, want MISS", agent, got)
		}
	}
	if got := procs[1].aht(t, "demo", "demo-key", "agent002"); got != "HIT" {
		t.Errorf("replica 2 asked for what replica 1 fetched: X-Cache %s, want HIT (shared cache)", got)
	}
	var budget map[string]struct{ Limit, Remaining int64 }
	if err := json.Unmarshal([]byte(procs[1].get(t, "/admin/budget")), &budget); err != nil {
		t.Fatal(err)
	}
	if b := budget["demo"]; b.Limit-b.Remaining != 3 {
		t.Errorf("replica 2 sees demo's budget %+v, want the 3 calls replica 1 spent", b)
	}

	// The binary serves the status page on its admin listener, behind the
	// admin token like /admin/budget.
	if page := procs[1].get(t, "/"); !strings.Contains(page, `data-account="demo" data-used="3"`) {
		t.Errorf("replica 2's status page does not show demo's 3 calls:\n%s", page)
	}
	resp, err := http.Get(procs[1].admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status page without the admin token: %d, want 401", resp.StatusCode)
	}
}

// TestSystemdUnit checks deploy/systemd/caproxy.service with
// systemd-analyze verify (every warning is a failure), or structurally
// where systemd-analyze is missing.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("systemd", "caproxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("not key=value: %q", line)
			}
			unit[section+"."+k] = v
		}
	}
	for k, want := range map[string]string{
		"Service.ExecStart":       "/usr/local/bin/caproxy -config /etc/caproxy/config.yaml",
		"Service.ExecReload":      "/bin/kill -HUP $MAINPID",
		"Service.DynamicUser":     "yes",
		"Service.StateDirectory":  "caproxy",
		"Service.ProtectSystem":   "strict",
		"Service.NoNewPrivileges": "yes",
		"Install.WantedBy":        "multi-user.target",
	} {
		if unit[k] != want {
			t.Errorf("%s=%q, want %q", k, unit[k], want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: checked the unit's structure only")
	}
	dir := t.TempDir()
	env := filepath.Join(dir, "caproxy.env")
	os.WriteFile(env, []byte("CLOUDAGENT_API_KEY=demo-key\n"), 0o600)
	local := strings.NewReplacer("/usr/local/bin/caproxy", binary, "/etc/caproxy/caproxy.env", env).Replace(string(data))
	path := filepath.Join(dir, "caproxy.service")
	os.WriteFile(path, []byte(local), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
