// camwatch firmware rules: private keys, certificates, SSH keys and static crypto keys.
//
// Rules with role "crypto" are locators: analyzers/firmware/inspect/crypto.py parses the key or
// certificate at each match (type, size, encryption, fingerprint) and records it in the report.
// A non-silent locator falls back to its own finding when the material cannot be parsed, so a
// damaged private key is still reported; silent ones (DER patterns) only count when they parse.
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_key_001_pem_private_key
{
    meta:
        id = "CW-FW-KEY-001"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (EMBA deep_key_search.cfg; FACT_core crypto_material start and end markers)"
        description = "PEM private key (start marker, key body, end marker): every device running this image shares it"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 90
    strings:
        $begin = /-----BEGIN ([A-Z0-9]{1,10} ){0,3}PRIVATE KEY-----[\r\n]{1,2}[A-Za-z0-9+\/=:, \r\n-]{32}/
        $end = /-----END ([A-Z0-9]{1,10} ){0,3}PRIVATE KEY-----/
    condition:
        $begin and $end and @end[#end] > @begin[1]
}

rule cw_key_002_pem_certificate
{
    meta:
        id = "CW-FW-KEY-002"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (certificates are inventory)"
        description = "PEM certificate"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 90
    strings:
        $begin = /-----BEGIN (X509 |TRUSTED )?CERTIFICATE-----[\r\n]{1,2}[A-Za-z0-9+\/=\r\n]{32}/
    condition:
        $begin
}

rule cw_key_003_pem_public_key
{
    meta:
        id = "CW-FW-KEY-003"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (public keys are inventory)"
        description = "PEM public key"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto,signature"
        reliability = 90
    strings:
        $begin = /-----BEGIN (RSA )?PUBLIC KEY-----[\r\n]{1,2}[A-Za-z0-9+\/=\r\n]{32}/
    condition:
        $begin
}

rule cw_key_004_openssh_public_key : silent
{
    meta:
        id = "CW-FW-KEY-004"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10; firmwalker data/sshfiles (authorized_keys, *.pub)"
        description = "Locator: OpenSSH public key line (authorized_keys, host *.pub)"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 90
    strings:
        $rsa = "ssh-rsa AAAAB3NzaC1yc2E" ascii
        $dss = "ssh-dss AAAAB3NzaC1kc3M" ascii
        $ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5" ascii
        $ec = /ecdsa-sha2-nistp(256|384|521) AAAAE2VjZHNhLXNoYTItbmlzdHA/
    condition:
        any of them
}

rule cw_key_005_der_private_key : silent
{
    meta:
        id = "CW-FW-KEY-005"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (binary form of the same keys)"
        description = "Locator: DER private key (PKCS#1 RSA, PKCS#8, SEC1 EC); only reported when it parses"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 80
    strings:
        // PKCS#1 RSAPrivateKey: SEQUENCE { INTEGER 0, INTEGER n (1024-bit and larger modulus) ...
        $pkcs1 = { 30 82 ?? ?? 02 01 00 02 (81 81 | 82 ?? ??) 00 }
        // PKCS#8 PrivateKeyInfo: SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption | id-ecPublicKey | Ed25519
        $pkcs8_rsa = { 30 82 ?? ?? 02 01 00 30 0D 06 09 2A 86 48 86 F7 0D 01 01 01 05 00 04 82 }
        $pkcs8_ec = { 30 (81 ?? | 82 ?? ??) 02 01 00 30 (10 | 13) 06 07 2A 86 48 CE 3D 02 01 06 }
        $pkcs8_ed = { 30 2E 02 01 00 30 05 06 03 2B 65 70 04 22 04 20 }
        // SEC1 ECPrivateKey: SEQUENCE { INTEGER 1, OCTET STRING d (P-256 / P-384 / P-521)
        $sec1 = { 30 (77 | 81 A4 | 81 DC | 82 01 ??) 02 01 01 04 (20 | 30 | 42) }
    condition:
        any of them
}

rule cw_key_006_der_certificate : silent
{
    meta:
        id = "CW-FW-KEY-006"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10"
        description = "Locator: DER X.509 v3 certificate; only recorded when it parses"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 80
    strings:
        // Certificate SEQUENCE { TBSCertificate SEQUENCE { [0] { INTEGER 2 } ...
        $v3 = { 30 (81 ?? | 82 ?? ??) 30 (81 ?? | 82 ?? ??) A0 03 02 01 02 }
    condition:
        $v3
}

rule cw_key_007_dropbear_host_key
{
    meta:
        id = "CW-FW-KEY-007"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10; dropbear host key file format (length-prefixed key type then mpints)"
        description = "Dropbear SSH host private key: every device running this image has the same SSH identity (impersonation, decryption of recorded sessions)"
        category = "crypto"
        indicator = "GEN-10"
        role = "crypto"
        reliability = 80
    strings:
        $rsa = { 00 00 00 07 73 73 68 2D 72 73 61 00 00 00 }
        $dss = { 00 00 00 07 73 73 68 2D 64 73 73 00 00 00 }
        $ec = { 00 00 00 13 65 63 64 73 61 2D 73 68 61 32 2D 6E 69 73 74 70 }
        $ed = { 00 00 00 0B 73 73 68 2D 65 64 32 35 35 31 39 00 00 00 }
    condition:
        // a host key file starts with its type; the same bytes inside sshd code are not a key
        $rsa at 0 or $dss at 0 or $ec at 0 or $ed at 0
}

rule cw_key_008_pgp_private_key
{
    meta:
        id = "CW-FW-KEY-008"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (FACT_core crypto_material GnuPG)"
        description = "PGP/GnuPG private key block"
        category = "crypto"
        indicator = "GEN-10"
        reliability = 90
    strings:
        $begin = "-----BEGIN PGP PRIVATE KEY BLOCK-----" ascii
        $end = "-----END PGP PRIVATE KEY BLOCK-----" ascii
    condition:
        $begin and $end
}

rule cw_key_009_aes_key_marker
{
    meta:
        id = "CW-FW-KEY-009"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-10 (EMBA deep_key_search.cfg: -----BEGIN .*AES KEY-----)"
        description = "Static symmetric key block (-----BEGIN ... AES KEY-----)"
        category = "crypto"
        indicator = "GEN-10"
        reliability = 70
    strings:
        $aes = /-----BEGIN [A-Z0-9 ]{0,24}AES KEY-----/
    condition:
        $aes
}

rule cw_key_010_hikvision_config_backup_key
{
    meta:
        id = "CW-FW-KEY-010"
        severity = "medium"
        vendor = "hikvision"
        cve = "CVE-2017-7921"
        reference = "indicators.md HK-08; firmware-formats.md 2.10 (p4tq decrypt_configurationFile.py)"
        description = "Hikvision static configuration-backup AES-128 key: leaked configuration files (with user credentials) decrypt with a public key"
        category = "crypto"
        indicator = "HK-08"
        reliability = 90
    strings:
        $aes = { 27 99 77 F6 2F 6C FD 2D 91 CD 75 B8 89 CE 0C 9A }
    condition:
        $aes
}
