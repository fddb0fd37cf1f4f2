// Package docs_test checks that every citation of the docs pages in the repository points at a
// page and a section that exist, so that code comments, deploy files and `explain` output never
// send a reader to a page or section that is not there.
//
// What counts as a citation, in any tracked text file:
//   - a path to a page, `docs/cors-semantics.md` (or a Markdown link to one, resolved from the
//     linking file), optionally followed by "section N", "section N.M", "sections N and M" or
//     "§N";
//   - the short forms "contract section N" / "contract §N" (docs/envoy-extproc.md) and
//     "semantics section N" (docs/cors-semantics.md);
//   - a bare "section N" or "§N" (not "RFC 9110 section 5.6.2"). It continues the page of the citation before it in the same
//     sentence; failing that, it is a section of the page itself (in docs/), or of the page the
//     Go package's doc comment names next to a quoted "section N" (as internal/policy does).
//     Anywhere else a bare section is an error: the reader cannot tell which page it means.
//
// "N.M" and "section N, item M" need a numbered item M (or a heading "N.M") in section N.
// This package's own Go files are not scanned (their examples cite missing pages on purpose),
// nor are licence texts, which cite their own sections.
package docs_test

import (
	"bytes"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	semanticsPage = "docs/cors-semantics.md"
	contractPage  = "docs/envoy-extproc.md"
)

// nums is a section number, optionally ".M", followed by more of them or by ", item M".
const nums = `\d+(?:\.\d+)?(?:\s*,\s*item\s+\d+|\s*(?:,\s*and|,|and|or|to)\s*(?:§\s?|sections?\s+)?\d+(?:\.\d+)?)*`

// citationRE finds a page (path or Markdown link) with its optional sections, or a short or
// bare section citation; a section of an RFC is matched only to be skipped.
var citationRE = regexp.MustCompile(`(?i)` +
	`(?P<rfc>\bRFC\s?\d+,?\s+(?:sections?\s+|§\s?)` + nums + `)|` +
	`(?:\]\((?P<link>[^)\s#:]+\.md)(?:#[^)]*)?\)|(?P<path>[\w./-]*\bdocs/[\w.-]+\.md))` +
	`(?:,?\s+(?:sections?\s+|§\s?)(?P<pnums>` + nums + `))?` +
	`|(?P<qual>\b(?:contract|semantics)(?:\s+page)?,?\s+)?(?:\bsections?\s+|§\s?)(?P<nums>` + nums + `)`)

// numRE splits the numbers of one citation: "3.2", "3, item 6", "2 and §3".
var numRE = regexp.MustCompile(`(?i)(\d+)(?:\.(\d+)|\s*,\s*item\s+(\d+))?`)

// packageDefaultRE finds, in a package doc comment, the page that bare "section N" citations
// of the package refer to: a docs path followed, in the same paragraph, by "section N" or "§N"
// in quotes ("contract section N" names the short form, not a default).
var packageDefaultRE = regexp.MustCompile(`(docs/[\w.-]+\.md)(?:[^"\n]|\n[^\n"])*\n?"(?:section |§)N"`)

// sentenceEnd separates a bare citation from an earlier one whose page it would otherwise take:
// the end of a sentence, or of a line (comment lines that continue each other are joined
// first); in Markdown, where prose wraps, of a paragraph.
var (
	sentenceEnd         = regexp.MustCompile(`[.;:]\s|\n`)
	markdownSentenceEnd = regexp.MustCompile(`[.;:]\s|\n\s*\n`)
)

// commentJoin joins a comment continued on the next line ("//" or "#"), so that "contract" at
// the end of one line qualifies "§5" at the start of the next.
var commentJoin = regexp.MustCompile(`\n[ \t]*(?://|#)[ \t]?`)

type page struct {
	sections map[int]bool
	items    map[int]map[int]bool // section → numbered items (and N.M headings)
}

var (
	headingRE  = regexp.MustCompile(`^#{1,6}\s+(\d+)(?:\.(\d+))?\.?\s`)
	listItemRE = regexp.MustCompile(`^\s*(\d+)\.\s`)
	// topHeadingRE is a heading at the level of the numbered sections or above: it ends the
	// section before it (a "###" heading inside a section does not).
	topHeadingRE = regexp.MustCompile(`^#{1,2}\s`)
)

const codeFence = "```"

// parsePage finds the numbered sections of a page ("## 3. Title") and, in each, the numbered
// list items and "N.M" headings, outside code blocks.
func parsePage(text string) page {
	p := page{sections: map[int]bool{}, items: map[int]map[int]bool{}}
	current := 0
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), codeFence) {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			if m[2] != "" {
				i, _ := strconv.Atoi(m[2])
				p.addItem(n, i)
				continue
			}
			current = n
			p.sections[n] = true
			continue
		}
		if topHeadingRE.MatchString(line) {
			current = 0
			continue
		}
		if m := listItemRE.FindStringSubmatch(line); m != nil && current > 0 {
			i, _ := strconv.Atoi(m[1])
			p.addItem(current, i)
		}
	}
	return p
}

func (p page) addItem(section, item int) {
	if p.items[section] == nil {
		p.items[section] = map[int]bool{}
	}
	p.items[section][item] = true
}

func (p page) sectionList() string {
	var ns []int
	for n := range p.sections {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// checker checks the citations of files read from fsys.
type checker struct {
	fsys     fs.FS
	pages    map[string]*page // nil value: the page does not exist
	defaults map[string]string
}

func newChecker(fsys fs.FS) *checker {
	return &checker{fsys: fsys, pages: map[string]*page{}, defaults: map[string]string{}}
}

func (c *checker) page(name string) *page {
	if p, ok := c.pages[name]; ok {
		return p
	}
	var p *page
	if data, err := fs.ReadFile(c.fsys, name); err == nil {
		pp := parsePage(string(data))
		p = &pp
	}
	c.pages[name] = p
	return p
}

// packageDefault returns the page the doc comment of dir's Go package names for bare
// citations, or "".
func (c *checker) packageDefault(dir string) string {
	if d, ok := c.defaults[dir]; ok {
		return d
	}
	d := ""
	entries, _ := fs.ReadDir(c.fsys, dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		src, err := fs.ReadFile(c.fsys, path.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), e.Name(), src, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil || f.Doc == nil {
			continue
		}
		if m := packageDefaultRE.FindStringSubmatch(f.Doc.Text()); m != nil {
			d = m[1]
			break
		}
	}
	c.defaults[dir] = d
	return d
}

// check returns one problem per bad citation in the file name, as "name:line: message".
func (c *checker) check(name string, text string) []string {
	joined, lineOf := joinComments(text)
	var problems []string
	report := func(off int, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", name, lineOf(off), fmt.Sprintf(format, args...)))
	}
	lastPage, lastEnd := "", -1
	end := sentenceEnd
	if strings.HasSuffix(name, ".md") {
		end = markdownSentenceEnd
	}
	for _, m := range citationRE.FindAllStringSubmatchIndex(joined, -1) {
		group := func(g string) string {
			i := citationRE.SubexpIndex(g)
			if m[2*i] < 0 {
				return ""
			}
			return joined[m[2*i]:m[2*i+1]]
		}
		if group("rfc") != "" {
			continue // another document's sections
		}
		var target, numbers string
		switch {
		case group("link") != "":
			target, numbers = path.Clean(path.Join(path.Dir(name), group("link"))), group("pnums")
		case group("path") != "":
			p := group("path")
			if strings.HasPrefix(p, "docs/") {
				target = p
			} else {
				target = path.Clean(path.Join(path.Dir(name), p))
			}
			numbers = group("pnums")
		default:
			numbers = group("nums")
			switch q := strings.ToLower(group("qual")); {
			case strings.HasPrefix(q, "contract"):
				target = contractPage
			case strings.HasPrefix(q, "semantics"):
				target = semanticsPage
			case lastPage != "" && !end.MatchString(joined[lastEnd:m[0]]):
				target = lastPage
			case strings.HasPrefix(name, "docs/") && strings.HasSuffix(name, ".md"):
				target = name
			case strings.HasSuffix(name, ".go"):
				target = c.packageDefault(path.Dir(name))
			}
			if target == "" {
				report(m[0], "%q names no page: write docs/PAGE.md section N, or name the page in the package doc comment", strings.TrimSpace(joined[m[0]:m[1]]))
				continue
			}
		}
		lastPage, lastEnd = target, m[1]
		p := c.page(target)
		if p == nil {
			report(m[0], "%s: no such page", target)
			continue
		}
		for _, n := range numRE.FindAllStringSubmatch(numbers, -1) {
			sec, _ := strconv.Atoi(n[1])
			if !p.sections[sec] {
				report(m[0], "%s section %d: no such section (it has %s)", target, sec, p.sectionList())
				continue
			}
			item := n[2] + n[3]
			if item == "" {
				continue
			}
			if i, _ := strconv.Atoi(item); !p.items[sec][i] {
				report(m[0], "%s section %d.%s: section %d has no item %s", target, sec, item, sec, item)
			}
		}
	}
	return problems
}

// joinComments joins comment lines continued on the next line and returns the joined text with
// a function mapping an offset in it back to a 1-based line of text.
func joinComments(text string) (string, func(int) int) {
	var b strings.Builder
	var lineStarts []int // offsets in the joined text where an original line begins
	lineStarts = append(lineStarts, 0)
	last := 0
	for _, m := range commentJoin.FindAllStringIndex(text, -1) {
		b.WriteString(text[last:m[0]])
		b.WriteByte(' ')
		lineStarts = appendNewlines(lineStarts, text[last:m[0]], b.Len()-1-len(text[last:m[0]]))
		lineStarts = append(lineStarts, b.Len())
		last = m[1]
	}
	start := b.Len()
	b.WriteString(text[last:])
	lineStarts = appendNewlines(lineStarts, text[last:], start)
	return b.String(), func(off int) int {
		i, found := slices.BinarySearch(lineStarts, off)
		if !found {
			i--
		}
		return i + 1
	}
}

// appendNewlines records the line starts after each newline of s, written at offset base.
func appendNewlines(starts []int, s string, base int) []int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			starts = append(starts, base+i+1)
		}
	}
	return starts
}

// repoFiles lists the tracked files of the repository at root (git ls-files), or every file
// under it when git cannot say.
func repoFiles(t *testing.T, root string) []string {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err == nil {
		var files []string
		for _, f := range bytes.Split(out, []byte{0}) {
			if len(f) > 0 {
				files = append(files, string(f))
			}
		}
		return files
	}
	t.Logf("git ls-files: %v; scanning every file instead", err)
	var files []string
	require.NoError(t, fs.WalkDir(os.DirFS(root), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin") {
			return fs.SkipDir
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	}))
	return files
}

func checkAll(fsys fs.FS, files []string) []string {
	c := newChecker(fsys)
	var problems []string
	for _, name := range files {
		if strings.HasPrefix(name, "docs/") && strings.HasSuffix(name, ".go") || isLegalText(name) {
			continue
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil || bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data) {
			continue
		}
		problems = append(problems, c.check(name, string(data))...)
	}
	return problems
}

// isLegalText reports whether name is a licence or notice, whose "Sections 1 through 9" are its
// own.
func isLegalText(name string) bool {
	base := strings.ToUpper(path.Base(name))
	return strings.HasPrefix(base, "LICENSE") || strings.HasPrefix(base, "LICENCE") ||
		strings.HasPrefix(base, "COPYING") || strings.HasPrefix(base, "NOTICE")
}

// TestCitations: every citation in the repository points at a page and section that exist.
func TestCitations(t *testing.T) {
	root := ".."
	files := repoFiles(t, root)
	require.Contains(t, files, semanticsPage)
	require.Contains(t, files, contractPage)
	for _, p := range checkAll(os.DirFS(root), files) {
		t.Error(p)
	}
}

// TestCheckerFinds: the checker itself, on a small repository in memory, reports a missing
// page, a missing section, a missing item and a bare citation with no page, and accepts the
// good ones.
func TestCheckerFinds(t *testing.T) {
	fsys := fstest.MapFS{
		"docs/cors-semantics.md": {Data: []byte("# S\n\n## 1. Fields\n\ntext\n\n## 4. ACAO\n\n1. all\n2. vary\n\n### Notes\n\n5. five\n\n```\n## 7. not a heading\n```\n\n## Appendix\n\n6. six\n")},
		"docs/envoy-extproc.md":  {Data: []byte("# C\n\n## 3. Policy\n\n1. grpc\n2. route\n\n## 5. Failures\n\nSee section 3 and section 6.\n")},
		"docs/README.md":         {Data: []byte("[semantics](cors-semantics.md) section 4, [gone](gone.md).\nThe [rules](cors-semantics.md)\n(section 1 and sections 4 to 9).\n")},
		"pkg/doc.go":             {Data: []byte("// Package pkg does things; docs/cors-semantics.md is cited here as \"section N\".\npackage pkg\n")},
		"pkg/a.go": {Data: []byte("package pkg\n\n" +
			"// ok: section 1, section 4.2, section 4.5, semantics section 4, contract §3 and §5, contract section 3, item 2.\n" +
			"// bad: section 7. contract §4. semantics section 4.3. section 4.6. docs/nope.md\n" +
			"// continued: (contract section 5, and section 9)\n" +
			"// joined over lines: the contract\n// §6 (docs/envoy-extproc.md section 3)\n" +
			"var x = 1 // contract §3\nvar y = 2 // section 7 is the package's page, not the contract's\n")},
		"other/b.go":      {Data: []byte("// Package other cites nothing by default.\npackage other\n\n// section 1 of what?\n// a token (RFC 9110 section 5.6.2)\n")},
		"deploy/x.yaml":   {Data: []byte("# the fields (docs/cors-semantics.md section 1), and §2\n")},
		"cmd/c/shared.go": {Data: []byte("// Package main follows shared/docs/envoy-extproc.md.\npackage main\n")},
		"LICENSE":         {Data: []byte("as defined by Sections 1 through 9 of this document\n")},
		"q/doc.go":        {Data: []byte("// Package q cites docs/envoy-extproc.md as \"contract section N\".\npackage q\n\n// section 3\n")},
	}
	var files []string
	for name := range fsys {
		files = append(files, name)
	}
	slices.Sort(files)
	got := checkAll(fsys, files)
	assert.ElementsMatch(t, []string{
		"cmd/c/shared.go:1: cmd/c/shared/docs/envoy-extproc.md: no such page",
		"deploy/x.yaml:1: docs/cors-semantics.md section 2: no such section (it has 1, 4)",
		"docs/README.md:1: docs/gone.md: no such page",
		"docs/README.md:3: docs/cors-semantics.md section 9: no such section (it has 1, 4)",
		"docs/envoy-extproc.md:10: docs/envoy-extproc.md section 6: no such section (it has 3, 5)",
		"other/b.go:4: \"section 1\" names no page: write docs/PAGE.md section N, or name the page in the package doc comment",
		"q/doc.go:4: \"section 3\" names no page: write docs/PAGE.md section N, or name the page in the package doc comment",
		"pkg/a.go:4: docs/cors-semantics.md section 7: no such section (it has 1, 4)",
		"pkg/a.go:4: docs/envoy-extproc.md section 4: no such section (it has 3, 5)",
		"pkg/a.go:4: docs/cors-semantics.md section 4.3: section 4 has no item 3",
		"pkg/a.go:4: docs/cors-semantics.md section 4.6: section 4 has no item 6",
		"pkg/a.go:4: docs/nope.md: no such page",
		"pkg/a.go:5: docs/envoy-extproc.md section 9: no such section (it has 3, 5)",
		"pkg/a.go:6: docs/envoy-extproc.md section 6: no such section (it has 3, 5)",
		"pkg/a.go:9: docs/cors-semantics.md section 7: no such section (it has 1, 4)",
	}, got)
}
