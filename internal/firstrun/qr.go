package firstrun

import (
	"fmt"
	"strconv"
	"strings"

	"rsc.io/qr"
)

// quietZone is the light border a QR code needs around it, in modules (ISO/IEC 18004 asks for 4).
const quietZone = 4

// encode makes the QR code of text, with medium error correction (15% of it can be lost, a smudge or a glare).
func encode(text string) (*qr.Code, error) {
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		return nil, fmt.Errorf("firstrun: encoding %q as a QR code: %w", text, err)
	}
	return c, nil
}

// SVG returns the QR code of text as an SVG image: dark modules on a white square that includes the quiet zone,
// so that it scans the same on a dark page. Each module is one unit; the image scales to the size it is shown at.
func SVG(text string) ([]byte, error) {
	c, err := encode(text)
	if err != nil {
		return nil, err
	}
	side := c.Size + 2*quietZone
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `)
	b.WriteString(strconv.Itoa(side) + " " + strconv.Itoa(side))
	b.WriteString(`" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path fill="#000" d="`)
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; {
			if !c.Black(x, y) {
				x++
				continue
			}
			run := 1
			for x+run < c.Size && c.Black(x+run, y) {
				run++
			}
			// One rectangle per run of dark modules on a row: M x y h run v 1 h -run z
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x+quietZone, y+quietZone, run, run)
			x += run
		}
	}
	b.WriteString(`"/></svg>`)
	return []byte(b.String()), nil
}

// Terminal returns the QR code of text drawn for a terminal with half blocks: each character is two modules, one
// above the other, so that the code stays square in a terminal's tall cells. ANSI colours fix it as black on white
// whatever the terminal's theme, for a camera reads dark modules on a light ground.
func Terminal(text string) (string, error) {
	c, err := encode(text)
	if err != nil {
		return "", err
	}
	dark := func(x, y int) bool {
		x, y = x-quietZone, y-quietZone
		return x >= 0 && y >= 0 && x < c.Size && y < c.Size && c.Black(x, y)
	}
	const (
		blackOnWhite = "\x1b[30;107m" // black foreground, bright white background
		reset        = "\x1b[0m"
	)
	side := c.Size + 2*quietZone
	var b strings.Builder
	for y := 0; y < side; y += 2 {
		b.WriteString(blackOnWhite)
		for x := 0; x < side; x++ {
			top, bottom := dark(x, y), y+1 < side && dark(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString(reset + "\n")
	}
	return b.String(), nil
}
