<#
.SYNOPSIS
    Writes the casarray inventory of every Exchange server with client access as JSON.
.DESCRIPTION
    Read-only: it runs only Get- cmdlets. For each server it records the client-access virtual
    directories (Server, Name, Identity, InternalUrl, ExternalUrl and authentication methods), the
    Outlook Anywhere settings (host names, SSL requirements, authentication, SSLOffloading) and the
    Autodiscover SCP (AutoDiscoverServiceInternalUri), and writes them as UTF-8 JSON for
    'casarray namespace plan', 'script' and 'verify'.
    Run it in the Exchange Management Shell.
.PARAMETER Path
    The JSON file to write. Default: casarray-inventory.json in the current folder.
.PARAMETER Server
    Only these servers (by name). Default: every server with the Client Access service.
.PARAMETER ADPropertiesOnly
    Read only what Active Directory stores (URLs and host names are there) and skip each server's
    IIS metabase: faster, and works while a server is down, but IIS-only settings are left out.
.EXAMPLE
    .\casarray-collector.ps1 -Path C:\Temp\casarray-inventory.json
#>
param(
    [string]$Path = 'casarray-inventory.json',
    [string[]]$Server = @(),
    [switch]$ADPropertiesOnly
)

# Exchange cmdlets reach the shell through implicit remoting, which does not honour
# $ErrorActionPreference for their errors: every Exchange call below also says -ErrorAction Stop.
$ErrorActionPreference = 'Stop'

# The virtual directories casarray manages: inventory Type -> Get- cmdlet.
$VirtualDirectoryCmdlets = [ordered]@{
__VIRTUAL_DIRECTORY_CMDLETS__
}

# Per-type authentication settings; each is recorded where the virtual directory type has it.
$AuthenticationProperties = @(
    'BasicAuthentication', 'DigestAuthentication', 'WindowsAuthentication', 'FormsAuthentication',
    'OAuthAuthentication', 'AdfsAuthentication', 'WSSecurityAuthentication', 'LiveIdAuthentication',
    'CertificateAuthentication', 'BasicAuthEnabled', 'WindowsAuthEnabled', 'ClientCertAuth',
    'IISAuthenticationMethods'
)

function ConvertTo-CasText {
    # URLs (System.Uri), host names, ids and versions become plain strings; empty becomes $null.
    param([AllowNull()][object]$Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [Uri]) { return $Value.OriginalString }
    $text = $Value.ToString()
    if ($text -eq '') { return $null }
    return $text
}

function ConvertTo-CasList {
    # Multi-valued properties and enums become strings, one per item; callers wrap the call in @()
    # so that one item, or none, still serialises as a JSON array.
    param([AllowNull()][object]$Value)
    $Value | Where-Object { $null -ne $_ } | ForEach-Object { $_.ToString() }
}

function ConvertTo-CasValue {
    # A setting as JSON-ready data: booleans stay booleans, everything else becomes text or a list.
    param([AllowNull()][object]$Value)
    if ($null -eq $Value -or $Value -is [bool]) { return $Value }
    if ($Value -is [string] -or $Value -is [Uri]) { return (ConvertTo-CasText $Value) }
    if ($Value -is [System.Collections.IEnumerable]) { return , @(ConvertTo-CasList $Value) }
    return (ConvertTo-CasText $Value)
}

$readOptions = @{ ErrorAction = 'Stop' }
if ($ADPropertiesOnly) { $readOptions['ADPropertiesOnly'] = $true }

$clientAccessCmdlet = '__CLIENT_ACCESS_CMDLET__'
if (-not (Get-Command $clientAccessCmdlet -ErrorAction SilentlyContinue)) {
    # Exchange 2013 names the cmdlet after the server role.
    $clientAccessCmdlet = '__CLIENT_ACCESS_CMDLET_2013__'
}
$services = @(& $clientAccessCmdlet -ErrorAction Stop |
    Where-Object { $Server.Count -eq 0 -or $Server -contains $_.Name })
if ($services.Count -eq 0) {
    throw 'No Exchange server with the Client Access service was found.'
}

$servers = New-Object System.Collections.Generic.List[object]
$clientAccessServices = New-Object System.Collections.Generic.List[object]
$virtualDirectories = New-Object System.Collections.Generic.List[object]
$outlookAnywhere = New-Object System.Collections.Generic.List[object]

foreach ($service in $services) {
    $name = ConvertTo-CasText $service.Name
    $exchangeServer = __EXCHANGE_SERVER_CMDLET__ -Identity $name -ErrorAction Stop
    if ($exchangeServer.PSObject.Properties['IsE15OrLater'] -and -not $exchangeServer.IsE15OrLater) {
        Write-Warning "Skipping $name`: Exchange 2010 and older have no unified namespace to plan."
        continue
    }
    Write-Host "Reading $name"
    $servers.Add([ordered]@{
            Name                = ConvertTo-CasText $exchangeServer.Name
            Fqdn                = ConvertTo-CasText $exchangeServer.Fqdn
            AdminDisplayVersion = ConvertTo-CasText $exchangeServer.AdminDisplayVersion
            ServerRole          = ConvertTo-CasText $exchangeServer.ServerRole
            Site                = ConvertTo-CasText $exchangeServer.Site
        })
    $clientAccessServices.Add([ordered]@{
            Name                           = $name
            Identity                       = ConvertTo-CasText $service.Identity
            AutoDiscoverServiceInternalUri = ConvertTo-CasText $service.AutoDiscoverServiceInternalUri
            AutoDiscoverSiteScope          = @(ConvertTo-CasList $service.AutoDiscoverSiteScope)
        })

    foreach ($type in $VirtualDirectoryCmdlets.Keys) {
        $getCmdlet = $VirtualDirectoryCmdlets[$type]
        foreach ($vd in @(& $getCmdlet -Server $name @readOptions)) {
            $entry = [ordered]@{
                Type                          = $type
                Server                        = ConvertTo-CasText $vd.Server
                Name                          = ConvertTo-CasText $vd.Name
                Identity                      = ConvertTo-CasText $vd.Identity
                InternalUrl                   = ConvertTo-CasText $vd.InternalUrl
                ExternalUrl                   = ConvertTo-CasText $vd.ExternalUrl
                InternalAuthenticationMethods = @(ConvertTo-CasList $vd.InternalAuthenticationMethods)
                ExternalAuthenticationMethods = @(ConvertTo-CasList $vd.ExternalAuthenticationMethods)
            }
            foreach ($property in $AuthenticationProperties) {
                if ($vd.PSObject.Properties[$property]) {
                    $entry[$property] = ConvertTo-CasValue $vd.$property
                }
            }
            $virtualDirectories.Add($entry)
        }
    }

    foreach ($oa in @(__OUTLOOK_ANYWHERE_CMDLET__ -Server $name @readOptions)) {
        $outlookAnywhere.Add([ordered]@{
                Server                             = ConvertTo-CasText $oa.Server
                Name                               = ConvertTo-CasText $oa.Name
                Identity                           = ConvertTo-CasText $oa.Identity
                InternalHostname                   = ConvertTo-CasText $oa.InternalHostname
                ExternalHostname                   = ConvertTo-CasText $oa.ExternalHostname
                InternalClientsRequireSsl          = $oa.InternalClientsRequireSsl
                ExternalClientsRequireSsl          = $oa.ExternalClientsRequireSsl
                InternalClientAuthenticationMethod = ConvertTo-CasText $oa.InternalClientAuthenticationMethod
                ExternalClientAuthenticationMethod = ConvertTo-CasText $oa.ExternalClientAuthenticationMethod
                IISAuthenticationMethods           = @(ConvertTo-CasList $oa.IISAuthenticationMethods)
                SSLOffloading                      = $oa.SSLOffloading
            })
    }
}

$inventory = [ordered]@{
    Collector            = 'casarray namespace collector'
    CollectedAt          = (Get-Date).ToUniversalTime().ToString('o')
    Servers              = @($servers.ToArray())
    VirtualDirectories   = @($virtualDirectories.ToArray())
    OutlookAnywhere      = @($outlookAnywhere.ToArray())
    ClientAccessServices = @($clientAccessServices.ToArray())
}
# -InputObject, not the pipeline, so that no array is unrolled; Depth covers the nested lists.
$json = ConvertTo-Json -InputObject $inventory -Depth 8
$fullPath = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Path)
[System.IO.File]::WriteAllText($fullPath, $json, (New-Object System.Text.UTF8Encoding($false)))
Write-Host ('Wrote {0}: {1} servers, {2} virtual directories.' -f $fullPath, $servers.Count, $virtualDirectories.Count)
