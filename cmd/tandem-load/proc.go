package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// procCPU returns the CPU time (user plus system) the process pid has used so far: the sum of its threads' run
// time in nanoseconds from /proc/<pid>/task/*/schedstat, or where that cannot be read, utime+stime from
// /proc/<pid>/stat, which counts in hundredths of a second (too coarse for a login storm of a tenth of a second).
// The threads' sum misses threads that ended; servers keep theirs.
func procCPU(pid int) (time.Duration, error) {
	if d, err := threadsCPU(pid); err == nil {
		return d, nil
	}
	return statCPU(pid)
}

func threadsCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended meanwhile
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: empty", pid, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(ns)
	}
	if sum == 0 {
		return 0, errors.New("no thread run times")
	}
	return sum, nil
}

func statCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, so utime (14) and stime (15) are f[11] and f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// selfCPU returns the CPU time the generator itself has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memory is a process's memory use, in bytes.
type memory struct {
	VmRSS        int64 `json:"vm_rss"`        // /proc/<pid>/status
	RSS          int64 `json:"rss"`           // /proc/<pid>/smaps_rollup, the same pages counted another way
	PSS          int64 `json:"pss"`           // proportional set size: shared pages divided among their users
	PrivateDirty int64 `json:"private_dirty"` // pages only this process has written
	Anonymous    int64 `json:"anonymous"`
}

// procMemory reads the memory use of the process pid.
func procMemory(pid int) (memory, error) {
	var m memory
	status, err := readKB(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.VmRSS = status["VmRSS"]
	if rollup, err := readKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		m.RSS, m.PSS = rollup["Rss"], rollup["Pss"]
		m.PrivateDirty, m.Anonymous = rollup["Private_Dirty"], rollup["Anonymous"]
	}
	return m, nil
}

// readKB reads the "Name: 123 kB" lines of a /proc file, in bytes.
func readKB(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	values := make(map[string]int64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			values[name] = n << 10
		}
	}
	return values, sc.Err()
}
