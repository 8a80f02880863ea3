// Command imagebuild writes a container image as a docker-archive tarball (what `docker save`
// writes, and what `ctr images import` and `docker load` read) from directory trees, without
// a container engine: one layer per directory, owned by root, modes and symlinks kept.
//
//	imagebuild -o OUT.tar -name REF -entrypoint '["/x","y"]' [-user U:G] [-env K=V]... DIR...
//
// hack/images.sh uses it to build the operator, agent and sandbox images from the static
// binary and Debian packages; the Dockerfile stays the published recipe (test/image checks
// that both hold the same).
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	out := flag.String("o", "", "output tarball")
	name := flag.String("name", "", "image reference, e.g. ghcr.io/sharedlvm/sharedlvm-agent:v1")
	entry := flag.String("entrypoint", "", "entrypoint as a JSON array")
	user := flag.String("user", "", "user[:group] the image runs as")
	var env multi
	flag.Var(&env, "env", "KEY=VALUE (repeatable)")
	flag.Parse()
	if *out == "" || *name == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: imagebuild -o OUT.tar -name REF -entrypoint JSON [-user U:G] [-env K=V]... DIR...")
		os.Exit(2)
	}
	if err := build(*out, *name, *entry, *user, env, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

// epoch is every file's mtime: the same trees give the same layers.
var epoch = time.Unix(0, 0)

// layer tars dir with paths relative to it, sorted, owned by 0:0.
func layer(dir string) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = epoch, time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func build(out, name, entry, user string, env, dirs []string) error {
	var entrypoint []string
	if entry != "" {
		if err := json.Unmarshal([]byte(entry), &entrypoint); err != nil {
			return fmt.Errorf("-entrypoint: %w", err)
		}
	}
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	type file struct {
		name string
		data []byte
	}
	var files []file
	var diffIDs, layerNames []string
	for _, d := range dirs {
		b, err := layer(d)
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		id := digest(b)
		diffIDs = append(diffIDs, "sha256:"+id)
		layerNames = append(layerNames, id+"/layer.tar")
		files = append(files, file{id + "/layer.tar", b})
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": entrypoint,
			"User":       user,
			"Env":        env,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cname := digest(cb) + ".json"
	files = append(files, file{cname, cb})
	mb, err := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": []string{name}, "Layers": layerNames}})
	if err != nil {
		return err
	}
	files = append(files, file{"manifest.json", mb})

	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, fl := range files {
		if err := tw.WriteHeader(&tar.Header{Name: fl.name, Mode: 0o644, Size: int64(len(fl.data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(fl.data); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
