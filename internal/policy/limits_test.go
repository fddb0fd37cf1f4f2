package policy

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func originsPolicy(n int) map[string]any {
	list := make([]any, n)
	for i := range list {
		list[i] = fmt.Sprintf("https://o%d.test", i)
	}
	return map[string]any{"origins": list}
}

// Each limit holds at its bound and refuses one past it, with a message naming both.
func TestLimits(t *testing.T) {
	l := Limits{MaxOrigins: 3, MaxRegexInsts: 40}

	_, _, err := l.Compile(originsPolicy(3))
	require.NoError(t, err)
	_, _, err = l.Compile(originsPolicy(4))
	require.EqualError(t, err, "origins […]: 4 elements, over the limit of 3")

	small := `^https://[a-z]+\.test$`
	p, _, err := l.Compile(map[string]any{"origins": []any{small}})
	require.NoError(t, err, "a plain regex fits")
	d := p.Decide(&Request{Method: "GET", Origin: "https://abc.test"})
	assert.Equal(t, OriginAllowed, d.Origin)

	big := `https://[a-z]{50}\.test`
	_, _, err = l.Compile(map[string]any{"origins": []any{big}})
	require.Error(t, err)
	assert.Regexp(t, `^origins\[0\] ".*": regex of \d+ RE2 instructions, over the limit of 40$`, err.Error())

	named, _, err := l.ParseNamed([]byte("a: {origins: [x1, x2, x3, x4]}\n"))
	require.EqualError(t, err, "a: origins […]: 4 elements, over the limit of 3")
	assert.Error(t, named["a"].Err())
}

func TestDefaultLimits(t *testing.T) {
	_, _, err := Compile(originsPolicy(DefaultLimits.MaxOrigins))
	require.NoError(t, err)
	_, _, err = Compile(originsPolicy(DefaultLimits.MaxOrigins + 1))
	require.Error(t, err)
}
