package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Section is one group of a command's flags in its usage text.
type Section struct {
	Title string
	// Flags names the flags of the section: a name, or a prefix ending in "*" ("turn-*"). A flag goes to the
	// section that names it, else to the one with the longest prefix of it.
	Flags []string
}

// OtherTitle is the title of the section of flags that no Section names.
const OtherTitle = "Other"

// ParseSections is Parse with a usage text that lists the flags by section, each on one line with its
// environment variable (see Usage).
func ParseSections(fs *flag.FlagSet, envPrefix, intro string, sections []Section, args []string, getenv func(string) string) error {
	fs.Usage = func() { Usage(fs.Output(), fs, envPrefix, intro, sections) }
	return parse(fs, envPrefix, args, getenv)
}

// SectionOf returns the title of the section a flag belongs to, or OtherTitle.
func SectionOf(sections []Section, name string) string {
	best, bestLen := OtherTitle, -1
	for _, s := range sections {
		for _, f := range s.Flags {
			if prefix, ok := strings.CutSuffix(f, "*"); ok {
				if strings.HasPrefix(name, prefix) && len(prefix) > bestLen {
					best, bestLen = s.Title, len(prefix)
				}
			} else if f == name {
				return s.Title
			}
		}
	}
	return best
}

// Usage writes fs's usage text: intro, then a section at a time (in the order given; OtherTitle last, if any
// flag is in no section), one line a flag: its name and kind of value, its environment variable, what it does
// and its default.
func Usage(w io.Writer, fs *flag.FlagSet, envPrefix, intro string, sections []Section) {
	type row struct{ flag, env, text string }
	bySection := map[string][]row{}
	fs.VisitAll(func(f *flag.Flag) {
		kind, text := flag.UnquoteUsage(f)
		r := row{flag: "-" + f.Name, env: EnvName(envPrefix, f.Name), text: text}
		if kind != "" {
			r.flag += " " + kind
		}
		if d := f.DefValue; d != "" && d != "false" {
			if kind == "string" {
				d = fmt.Sprintf("%q", d)
			}
			r.text += " (default " + d + ")"
		}
		title := SectionOf(sections, f.Name)
		bySection[title] = append(bySection[title], r)
	})
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nEvery flag can also be set with the environment variable beside it; a flag on the command line\nwins.\n", fs.Name(), strings.TrimSpace(intro))
	titles := make([]string, 0, len(sections)+1)
	for _, s := range sections {
		titles = append(titles, s.Title)
	}
	for _, title := range append(titles, OtherTitle) {
		rows := bySection[title]
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		wFlag, wEnv := 0, 0 // columns aligned within the section
		for _, r := range rows {
			wFlag, wEnv = max(wFlag, len(r.flag)), max(wEnv, len(r.env))
		}
		for _, r := range rows {
			fmt.Fprintf(w, "  %-*s  %-*s  %s\n", wFlag, r.flag, wEnv, r.env, r.text)
		}
	}
}
