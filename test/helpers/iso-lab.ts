// The network of the ISO tests and benchmark: the cable's bridge in a
// network namespace holds 10.99.0.1 with a DHCP server (dnsmasq) and an HTTP
// server for the files of one directory (byte ranges too); no laptop anywhere.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { makeCable } from './e2e';

const run = promisify(execFile);

export const ISO_LAB_ADDRESS = '10.99.0.1';
export const ISO_LAB_PORT = 8080;

export interface IsoLab {
  netns: string;
  /** http://10.99.0.1:8080/NAME */
  url(name: string): string;
  stop(): Promise<void>;
}

/** Serves `dir` over HTTP and leases 10.99.0.10-20 on the bridge of `netns` (made here, with the taps stf6srv and stf6cli). */
export async function startIsoLab(netns: string, dir: string, leaseFile: string): Promise<IsoLab> {
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const c of children) c.kill('SIGKILL');
    await run('ip', ['netns', 'delete', netns]).catch(() => undefined);
  };
  try {
    await makeCable(netns);
    await run('ip', ['-n', netns, 'addr', 'add', `${ISO_LAB_ADDRESS}/24`, 'dev', 'cable']);
    children.push(
      spawn('ip', ['netns', 'exec', netns, 'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--port=0', '--interface=cable', '--bind-interfaces', '--dhcp-range=10.99.0.10,10.99.0.20,255.255.255.0,1h', `--dhcp-leasefile=${leaseFile}`], { stdio: 'ignore' }),
    );
    // Whole files, or one byte range of one (206, with an ETag), as web servers serve ISOs.
    const server = `const {createServer}=require('http'),fs=require('fs'),p=require('path');createServer((q,s)=>{const f=p.join(${JSON.stringify(dir)},p.basename(q.url));fs.stat(f,(e,st)=>{if(e||!st.isFile()){s.writeHead(404);return s.end()}const tag='"'+st.size+'-'+st.mtimeMs+'"',m=/^bytes=(\\d+)-(\\d*)$/.exec(q.headers.range||'');if(m&&Number(m[1])<st.size){const a=Number(m[1]),b=Math.min(m[2]?Number(m[2]):st.size-1,st.size-1);s.writeHead(206,{'content-range':'bytes '+a+'-'+b+'/'+st.size,'content-length':b-a+1,etag:tag,'accept-ranges':'bytes'});return fs.createReadStream(f,{start:a,end:b}).pipe(s)}s.writeHead(200,{'content-length':st.size,etag:tag,'accept-ranges':'bytes'});fs.createReadStream(f).pipe(s)})}).listen(${ISO_LAB_PORT},'${ISO_LAB_ADDRESS}')`;
    children.push(spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', server], { stdio: 'ignore' }));
    return { netns, url: (name) => `http://${ISO_LAB_ADDRESS}:${ISO_LAB_PORT}/${name}`, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

