// verify.go checks a Tally audit log export without Tally's code, with Go's golang.org/x/mod/sumdb packages
// (RFC 6962 trees, signed notes). On Debian: apt-get install golang-go golang-golang-x-mod-dev, then
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run verify.go EXPORT_DIR
//
// It opens the signed checkpoint with the exported key, reads the C2SP tlog-checkpoint (origin, size, root),
// recomputes the tree hash from the records' bytes, checks every inclusion proof, and the consistency proof from
// the previous checkpoint when there is one. Exit status 0: all hold; 1: something does not (it says what).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return b
}

// checkpoint opens a signed note and reads its origin, tree size and root hash.
func checkpoint(path string, verifiers note.Verifiers) (string, int64, tlog.Hash) {
	n, err := note.Open(read(path), verifiers)
	if err != nil {
		fail("%s: %v", path, err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] == "" {
		fail("%s: not a checkpoint (origin, size, root)", path)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		fail("%s: bad tree size %q", path, lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("%s: bad root hash: %v", path, err)
	}
	return lines[0], size, root
}

func hashes(path string) []tlog.Hash {
	var out []tlog.Hash
	for _, line := range strings.Split(strings.TrimSpace(string(read(path))), "\n") {
		if line == "" {
			continue
		}
		h, err := tlog.ParseHash(line)
		if err != nil {
			fail("%s: %v", path, err)
		}
		out = append(out, h)
	}
	return out
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: verify EXPORT_DIR")
	}
	dir := os.Args[1]
	verifier, err := note.NewVerifier(strings.TrimSpace(string(read(filepath.Join(dir, "key.pub")))))
	if err != nil {
		fail("key.pub: %v", err)
	}
	verifiers := note.VerifierList(verifier)
	origin, size, root := checkpoint(filepath.Join(dir, "checkpoint"), verifiers)

	names, err := filepath.Glob(filepath.Join(dir, "records", "*"))
	if err != nil {
		fail("%v", err)
	}
	if int64(len(names)) != size {
		fail("the checkpoint signs %d records, the export has %d", size, len(names))
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	records := make([][]byte, size)
	for i := int64(0); i < size; i++ {
		path := filepath.Join(dir, "records", fmt.Sprintf("%08d", i))
		records[i] = read(path)
		h, err := tlog.StoredHashes(i, records[i], reader)
		if err != nil {
			fail("record %d: %v", i, err)
		}
		stored = append(stored, h...)
	}
	computed, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("tree hash: %v", err)
	}
	if computed != root {
		fail("the records hash to %v, the signed checkpoint says %v", computed, root)
	}
	for i := int64(0); i < size; i++ {
		proof := hashes(filepath.Join(dir, "proofs", fmt.Sprintf("%08d", i)))
		if err := tlog.CheckRecord(proof, size, root, i, tlog.RecordHash(records[i])); err != nil {
			fail("inclusion proof of record %d: %v", i, err)
		}
	}
	consistency := "no previous checkpoint"
	if _, err := os.Stat(filepath.Join(dir, "checkpoint.previous")); err == nil {
		porigin, psize, proot := checkpoint(filepath.Join(dir, "checkpoint.previous"), verifiers)
		if porigin != origin {
			fail("the previous checkpoint is of %q, not %q", porigin, origin)
		}
		if err := tlog.CheckTree(hashes(filepath.Join(dir, "consistency")), size, root, psize, proot); err != nil {
			fail("consistency from size %d to %d: %v", psize, size, err)
		}
		consistency = fmt.Sprintf("size %d is a prefix of size %d", psize, size)
	}
	fmt.Printf("ok: %s, %d records, root %v signed by %s; %d inclusion proofs; %s\n",
		origin, size, root, verifier.Name(), size, consistency)
}
