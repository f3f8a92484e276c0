package wallet

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// keccak256 is Ethereum's hash: the original Keccak padding, not SHA3-256's.
func keccak256(data ...[]byte) []byte {
	h := sha3.NewLegacyKeccak256()
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// personalHash is the EIP-191 (version 0x45, personal_sign) hash of msg:
// keccak256("\x19Ethereum Signed Message:\n" + len(msg) + msg), the length
// in decimal bytes.
func personalHash(msg string) []byte {
	return keccak256([]byte("\x19Ethereum Signed Message:\n"+strconv.Itoa(len(msg))), []byte(msg))
}

var (
	errSigFormat = errors.New("the signature is not 65 bytes of 0x-prefixed hex")
	errSigV      = errors.New("the signature's v is not 27, 28, 0 or 1")
	errSigHighS  = errors.New("the signature's s is in the upper half of the curve order (EIP-2)")
	errSigBad    = errors.New("the signature does not recover a public key")
)

// decodeSignature parses a 0x-hex r||s||v signature. v may be 27/28 (as
// personal_sign returns it) or 0/1 (the bare recovery id, as some
// hardware wallets and libraries return it). It returns the signature in
// the compact format ecdsa.RecoverCompact wants: one byte 27+recid (no
// +4: Ethereum hashes the uncompressed key) followed by r and s.
func decodeSignature(sig string) ([]byte, error) {
	s := strings.TrimSpace(sig)
	if !strings.HasPrefix(s, "0x") && !strings.HasPrefix(s, "0X") {
		return nil, errSigFormat
	}
	raw, err := hex.DecodeString(s[2:])
	if err != nil || len(raw) != 65 {
		return nil, errSigFormat
	}
	v := raw[64]
	switch v {
	case 27, 28:
		v -= 27
	case 0, 1:
	default:
		return nil, errSigV
	}
	var sc secp256k1.ModNScalar
	if overflow := sc.SetByteSlice(raw[32:64]); overflow || sc.IsZero() {
		return nil, errSigBad
	}
	if sc.IsOverHalfOrder() {
		return nil, errSigHighS
	}
	out := make([]byte, 65)
	out[0] = 27 + v
	copy(out[1:], raw[:64])
	return out, nil
}

// recoverAddress returns the EIP-55 address that signed msg with sig
// (EIP-191 personal_sign).
func recoverAddress(msg, sig string) (string, error) {
	compact, err := decodeSignature(sig)
	if err != nil {
		return "", err
	}
	pub, compressed, err := ecdsa.RecoverCompact(compact, personalHash(msg))
	if err != nil || compressed {
		return "", errSigBad
	}
	return pubkeyAddress(pub), nil
}

// pubkeyAddress is the last 20 bytes of keccak256 of the uncompressed key
// without its 0x04 prefix, EIP-55 checksummed.
func pubkeyAddress(pub *secp256k1.PublicKey) string {
	h := keccak256(pub.SerializeUncompressed()[1:])
	return checksum(hex.EncodeToString(h[12:]))
}

// checksum writes 40 lower-case hex digits as an EIP-55 address: a letter
// is upper case when the matching nibble of keccak256(lower-case hex) is
// 8 or more.
func checksum(lowerHex string) string {
	h := keccak256([]byte(lowerHex))
	b := []byte(lowerHex)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			nib := h[i/2]
			if i%2 == 0 {
				nib >>= 4
			}
			if nib&0xf >= 8 {
				b[i] = c - 'a' + 'A'
			}
		}
	}
	return "0x" + string(b)
}

var (
	errAddrFormat   = errors.New("the address is not 0x followed by 40 hex digits")
	errAddrChecksum = errors.New("the address's mixed-case EIP-55 checksum is wrong (a typo?)")
)

// ParseAddress checks an Ethereum address and returns it EIP-55
// checksummed. Following EIP-55, an address in mixed case must carry a
// valid checksum; an all-lower-case or all-upper-case one carries none and
// is accepted as is (wallets and block explorers still print those).
func ParseAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) != 42 || (s[:2] != "0x" && s[:2] != "0X") {
		return "", errAddrFormat
	}
	digits := s[2:]
	if _, err := hex.DecodeString(digits); err != nil {
		return "", errAddrFormat
	}
	lower := strings.ToLower(digits)
	sum := checksum(lower)
	if digits == lower || digits == strings.ToUpper(digits) {
		return sum, nil
	}
	if "0x"+digits != sum {
		return "", errAddrChecksum
	}
	return sum, nil
}
