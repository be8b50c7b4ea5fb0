// camwatch firmware rules: hard-coded credentials.
//
// Password *hashes* are not judged here: the two "silent" locator rules below only find candidate
// passwd/shadow lines and Sofia "Password" fields quickly; analyzers/firmware/inspect/credentials.py
// then parses each candidate and computes the real crypt of every weak password (a hash is only
// reported above info when a weak password reproduces it).
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_cred_001_passwd_line_locator : silent
{
    meta:
        id = "CW-FW-CRED-001"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-02, GEN-03 (passwd/shadow lines, also embedded in binaries)"
        description = "Locator: candidate passwd/shadow line (uid 0, modular-crypt or shadow-style); parsed and cracked by the credentials inspector"
        category = "credentials"
        role = "passwd"
        reliability = 100
    strings:
        $uid0 = ":0:0:" ascii
        $md5 = ":$1$" ascii
        $sha256 = ":$5$" ascii
        $sha512 = ":$6$" ascii
        $apr1 = ":$apr1$" ascii
        $bcrypt = /:\$2[abxy]\$[0-9]{2}\$/
        $shadow = /:[0-9]{1,6}:[0-9]{1,6}:99999:[0-9]{0,5}:/
    condition:
        any of them
}

rule cw_cred_002_sofia_password_locator : silent
{
    meta:
        id = "CW-FW-CRED-002"
        severity = "info"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-04, GEN-02 (Sofia hash, firmware-formats.md section 9)"
        description = "Locator: Xiongmai Sofia 'Password' field; the credentials inspector compares it with the Sofia hash of every weak password"
        category = "credentials"
        role = "sofia"
        reliability = 100
    strings:
        $field = /"Pass[Ww]ord"[ \t]*:[ \t]*"[0-9A-Za-z]{8}"/
    condition:
        $field
}

rule cw_cred_003_known_des_hash_outside_passwd
{
    meta:
        id = "CW-FW-CRED-003"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md HK-06, XM-01, GEN-02 (absxcfbgXtb3o=xc3511, ToCOv8qxP13qs=hiklinux, LSiuY7pOmZG2s=123456)"
        description = "Known vendor root password hash stored outside a passwd line (e.g. written to /etc/passwd at run time): the cleartext is public"
        category = "credentials"
        indicator = "GEN-02"
        reliability = 90
    strings:
        $xm = "absxcfbgXtb3o" ascii
        $hik = "ToCOv8qxP13qs" ascii
        $hisi = "LSiuY7pOmZG2s" ascii
        // the same hashes inside a passwd line are handled (and cracked) by the credentials inspector
        $line = /[A-Za-z0-9_.-]{1,32}:(absxcfbgXtb3o|ToCOv8qxP13qs|LSiuY7pOmZG2s):[0-9]{0,6}:/
    condition:
        (#xm + #hik + #hisi) > #line
}

rule cw_cred_004_dahua_default_accounts
{
    meta:
        id = "CW-FW-CRED-004"
        severity = "high"
        vendor = "dahua"
        cve = ""
        reference = "indicators.md DH-05 (mcw0/PoC dahua-backdoor-PoC.py comments)"
        description = "Dahua reserved default accounts 888888 / 666666 defined in the default configuration (password equals the name)"
        category = "credentials"
        indicator = "DH-05"
        reliability = 70
    strings:
        $json = /"Name"[ \t]*:[ \t]*"(888888|666666)"/
        $passwd = /(^|\n)[0-9]{1,3}:(888888|666666):[^:\n]{0,64}:[0-9]{1,3}:/
    condition:
        any of them
}

rule cw_cred_005_wpa_passphrase
{
    meta:
        id = "CW-FW-CRED-005"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-11 (FACT_core WPA_Key_Hardcoded)"
        description = "Hard-coded WPA passphrase in a wpa_supplicant/hostapd configuration"
        category = "credentials"
        indicator = "GEN-11"
        reliability = 70
    strings:
        $psk = /[ \t\n]wpa_passphrase=[^ \t\r\n\x00$%]{8,63}/
    condition:
        $psk
}

rule cw_cred_006_cleartext_ddns_credentials
{
    meta:
        id = "CW-FW-CRED-006"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-12 (encoder in binwalk tests/inputs/zip.bin: www.88safce.com/vipddns/upgengxin.asp?username=%s&userpwd=%s)"
        description = "DDNS update over plain HTTP with the user name and password in the query string: credentials leak to the network and to a third-party DDNS"
        category = "credentials"
        indicator = "GEN-12"
        reliability = 80
    strings:
        $upg = /http:\/\/[^\/\x00\s]{1,64}\/[^?\x00\s]{0,64}\?[^\x00\s]{0,32}(user(name)?|usr|account)=%s&(userpwd|password|passwd|pwd|pass)=%s/
    condition:
        $upg
}
