package v1alpha1

import (
	"os"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
)

// The DevicePath type's CEL rules and the agent's one device-path check (blockdev) say the
// same thing in the same words.
func TestDevicePathMessagesAgreeWithTheAgent(t *testing.T) {
	src, err := os.ReadFile("names.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{blockdev.MsgDeviceUnderDev, blockdev.MsgDeviceNormalised} {
		if !strings.Contains(string(src), `message="`+msg+`"`) {
			t.Errorf("no CEL rule of DevicePath gives %q", msg)
		}
	}
}
